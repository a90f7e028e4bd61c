"""Where a managed HAProxy keeps its files and sockets, from options or the environment.

``DCNET_HAPROXY_RUN_DIR`` (default ``/run/dcnet-haproxy``) holds the admin socket
(``admin.sock``, mode 600), the master socket (``master.sock``) and the server-state
file (``server-state``); ``DCNET_HAPROXY_CONFIG`` (default ``<run dir>/haproxy.cfg``) is
the configuration file, kept next to its last known good copy (``<config>.lkg``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_RUN_DIR = "/run/dcnet-haproxy"
ENV_RUN_DIR = "DCNET_HAPROXY_RUN_DIR"
ENV_CONFIG = "DCNET_HAPROXY_CONFIG"


@dataclass(frozen=True)
class Paths:
    run_dir: str = DEFAULT_RUN_DIR
    config_path: str | None = None

    @classmethod
    def from_env(cls, run_dir: str | None = None, config: str | None = None,
                 environ: dict | None = None) -> Paths:
        env = os.environ if environ is None else environ
        return cls(run_dir or env.get(ENV_RUN_DIR) or DEFAULT_RUN_DIR,
                   config or env.get(ENV_CONFIG) or None)

    @property
    def config(self) -> str:
        return self.config_path or os.path.join(self.run_dir, "haproxy.cfg")

    @property
    def last_known_good(self) -> str:
        return self.config + ".lkg"

    @property
    def admin_socket(self) -> str:
        return os.path.join(self.run_dir, "admin.sock")

    @property
    def master_socket(self) -> str:
        return os.path.join(self.run_dir, "master.sock")

    @property
    def state_file(self) -> str:
        return os.path.join(self.run_dir, "server-state")

    @property
    def pid_file(self) -> str:
        return os.path.join(self.run_dir, "haproxy.pid")

    def master_argv(self, haproxy: str = "haproxy") -> list[str]:
        """The command line of a master-worker HAProxy in the foreground."""
        return [haproxy, "-W", "-S", f"{self.master_socket},mode,600", "-f", self.config,
                "-p", self.pid_file]
