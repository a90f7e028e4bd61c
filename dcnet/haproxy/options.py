"""The HAProxy target's options (``--haproxy-run-dir``, ...), declared apart from the
target so that a command line can offer every target's flags without importing the
targets (the HAProxy target brings jinja2)."""

from __future__ import annotations

from dcnet.haproxy.paths import DEFAULT_RUN_DIR, ENV_CONFIG, ENV_RUN_DIR
from dcnet.target.base import Option

OPTIONS: tuple[Option, ...] = (
    Option("run_dir", "haproxy-run-dir", "Directory of HAProxy's admin and master "
           "sockets, server-state file and elbctl's lock", default=DEFAULT_RUN_DIR,
           envvar=ENV_RUN_DIR, path=True),
    Option("config", "haproxy-config", "HAProxy's configuration file (default "
           "<run dir>/haproxy.cfg)", envvar=ENV_CONFIG, path=True),
)
