"""HAProxy's file-descriptor need against the limit the running master can give it.

HAProxy sizes its descriptor table from ``maxconn``: 2 x maxconn (client and server side
of every connection) + one per listener + 16 spare, and refuses to start a worker when it
cannot raise RLIMIT_NOFILE that far ("Cannot raise FD limit to 40017, limit is 20000").
Measured on HAProxy 2.6.12: maxconn 20000 with 1 bind -> 40017; maxconn 15000 with 3
binds -> 30019. A reload inherits the master's hard limit, so :func:`problem` compares
the rendered file's need with the hard limit of the master process (or of this process
when HAProxy is not running yet) and explains the mismatch before any file is written.
When the model sets no ``maxconn``, :func:`fitting_maxconn` picks 20000 or the most the
limit allows, so the documented commands start on a host with a low limit.
"""

from __future__ import annotations

import re

SPARE_FDS = 16
DEFAULT_MAXCONN = 20000
# a default maxconn leaves this many more descriptors free: HAProxy's own figure grows
# with master-worker mode, threads and sockets (2.6.12, -W -S, 2 binds + stats socket:
# 2 x maxconn + 41, not + 20)
DEFAULT_MARGIN = 100
_LISTENER = re.compile(r"^\s*(?:bind|stats\s+socket)\s", re.MULTILINE)
_MAXCONN = re.compile(r"^\s*maxconn\s+(\d+)", re.MULTILINE)


def needed_fds(maxconn: int, listeners: int) -> int:
    """HAProxy's own estimate of the descriptors it needs (see the module docstring)."""
    return 2 * maxconn + listeners + SPARE_FDS


def global_maxconn(config_text: str) -> int | None:
    """The first ``maxconn`` of the file (the global section comes first)."""
    found = _MAXCONN.search(config_text)
    return int(found.group(1)) if found else None


def listeners(config_text: str) -> int:
    """Bind lines and stats sockets, plus the master CLI socket."""
    return len(_LISTENER.findall(config_text)) + 1


def hard_nofile(pid: int | None = None) -> int | None:
    """The hard RLIMIT_NOFILE of ``pid`` (this process when None); None if unlimited or
    unreadable."""
    if pid is None:
        import resource

        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        return None if hard == resource.RLIM_INFINITY else hard
    try:
        with open(f"/proc/{pid}/limits") as handle:
            for line in handle:
                if line.startswith("Max open files"):
                    value = line.split()[4]
                    return None if value == "unlimited" else int(value)
    except (OSError, IndexError, ValueError):
        return None
    return None


def fitting_maxconn(listener_count: int, pid: int | None = None,
                    preferred: int = DEFAULT_MAXCONN) -> tuple[int, str | None]:
    """The default maxconn: ``preferred``, or the most the hard descriptor limit of
    ``pid`` (this process when None) allows for ``listener_count`` listeners; with a
    warning when it had to be lowered."""
    limit = hard_nofile(pid)
    if limit is None or needed_fds(preferred, listener_count) + DEFAULT_MARGIN <= limit:
        return preferred, None
    most = max(1, (limit - listener_count - SPARE_FDS - DEFAULT_MARGIN) // 2)
    return most, (f"haproxy.maxconn not set: using {most} instead of {preferred}, the most "
                  f"a hard RLIMIT_NOFILE of {limit} allows (raise the limit, e.g. "
                  "LimitNOFILE= in HAProxy's systemd unit, or set haproxy.maxconn)")


def problem(config_text: str, pid: int | None = None) -> str | None:
    """Why HAProxy could not start a worker on ``config_text`` under ``pid``'s limit (or
    None when it fits or the limit is unknown)."""
    maxconn = global_maxconn(config_text)
    limit = hard_nofile(pid)
    if maxconn is None or limit is None:
        return None
    count = listeners(config_text)
    need = needed_fds(maxconn, count)
    if need <= limit:
        return None
    whose = f"the HAProxy master (pid {pid})" if pid else "this process"
    most = (limit - count - SPARE_FDS) // 2
    return (f"haproxy.maxconn: {maxconn} needs {need} file descriptors but {whose} may "
            f"open at most {limit} (hard RLIMIT_NOFILE): set haproxy.maxconn to {most} or "
            f"less, or raise the limit (e.g. LimitNOFILE= in HAProxy's systemd unit)")
