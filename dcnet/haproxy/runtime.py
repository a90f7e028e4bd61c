"""Talking to a running HAProxy: the admin socket (runtime API) and the master socket.

It owns the socket client (one command per connection, clear errors when HAProxy is not
running or the socket is stale), the parsers of ``show servers state`` and ``show proc``
(pure, tested on captured output), and the reload handshake of HAProxy 2.6: send
``reload`` on the master socket (its reply is empty and the reload asynchronous), poll
``show proc`` until the master's reload counter moves, then check that it did not fail
and that a new worker is up.
"""

from __future__ import annotations

import codecs
import errno
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NoReturn

from dcnet.haproxy.layout import server_key

TIMEOUT = 10.0
# srv_admin_state bits meaning "in maintenance" (forced, inherited, resolution, hostname);
# 0x04 (maintenance from the config's ``disabled``) stays set on a slot filled at runtime.
ADMIN_MAINT = 0x01 | 0x02 | 0x20 | 0x40
ADMIN_DRAIN = 0x08 | 0x10


class HAProxyUnavailable(RuntimeError):
    """HAProxy is not running, or its socket is missing or stale (listed in
    ``HAProxyTarget.unavailable_errors``: elbctl exits 3)."""


class RuntimeCommandError(RuntimeError):
    """The runtime API answered a command with an error."""


def _connected(path: str, command: str, timeout: float) -> socket.socket:
    """A socket to ``path`` that was sent ``command`` (its write side shut)."""
    if not os.path.exists(path):
        raise HAProxyUnavailable(f"HAProxy is not running: socket {path} does not exist "
                                 "(start HAProxy, or set DCNET_HAPROXY_RUN_DIR)")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                raise HAProxyUnavailable(f"HAProxy is not running: socket {path} is stale "
                                         "(it exists but nothing listens on it)") from exc
            raise HAProxyUnavailable(f"cannot connect to HAProxy socket {path}: {exc}") from exc
        sock.sendall(command.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
    except BaseException as exc:
        sock.close()
        if isinstance(exc, HAProxyUnavailable):
            raise
        _unavailable(path, command, timeout, exc)
    return sock


def _unavailable(path: str, command: str, timeout: float, exc: BaseException) -> NoReturn:
    if isinstance(exc, TimeoutError):
        raise HAProxyUnavailable(f"HAProxy socket {path} did not answer {command!r} "
                                 f"within {timeout}s") from exc
    if isinstance(exc, OSError):       # reset while the master re-executes itself
        raise HAProxyUnavailable(f"HAProxy socket {path} failed on {command!r}: {exc}") from exc
    raise exc


def send(path: str, command: str, timeout: float = TIMEOUT) -> str:
    """Send one command on a HAProxy UNIX socket and return the whole answer."""
    sock = _connected(path, command, timeout)
    try:
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
        return b"".join(chunks).decode(errors="replace")
    except OSError as exc:
        _unavailable(path, command, timeout, exc)
    finally:
        sock.close()


def send_lines(path: str, command: str, timeout: float = TIMEOUT) -> Iterator[str]:
    """The answer of :func:`send`, as ``str.splitlines`` splits it, one line at a time
    as it is read (the whole answer is never held: ``show servers state`` of a large
    HAProxy is 20 MB)."""
    sock = _connected(path, command, timeout)

    def received() -> Iterator[bytes]:
        while data := sock.recv(65536):
            yield data

    try:
        yield from decoded_lines(received())
    except OSError as exc:
        _unavailable(path, command, timeout, exc)
    finally:
        sock.close()


def decoded_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Pure: ``b"".join(chunks).decode(errors="replace").splitlines()``, one line at a
    time as the chunks come (a character or a CR LF may straddle two chunks)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    for data in chunks:
        pending += decoder.decode(data)
        cut = pending.rfind("\n") + 1      # "\n" ends a line whatever follows
        if cut:
            yield from pending[:cut].splitlines()
            pending = pending[cut:]
    pending += decoder.decode(b"", final=True)
    yield from pending.splitlines()


@dataclass(frozen=True)
class ServerRow:
    """One line of ``show servers state``."""

    backend: str
    backend_id: int
    server: str
    server_id: int
    address: str
    op_state: int
    admin_state: int
    weight: int
    port: int

    @property
    def free(self) -> bool:
        return bool(self.admin_state & ADMIN_MAINT)

    @property
    def key(self) -> str:
        return server_key(self.address, self.port)

    def attrs(self) -> dict:
        if self.admin_state & ADMIN_DRAIN or self.weight == 0:
            return {"state": "drain"}
        return {"state": "ready", "weight": self.weight}


def parse_servers_state(text: str) -> list[ServerRow]:
    """Pure: the rows of ``show servers state`` (format version 1)."""
    return [ServerRow(*fields) for fields in servers_state_rows(text.splitlines())]


def servers_state_rows(lines: Iterable[str]) -> Iterator[tuple]:
    """Pure: each row of ``show servers state`` (format version 1) given its lines, as
    the tuple of :class:`ServerRow`'s fields, made as the lines come (the drift check
    reads a large answer this way: :mod:`dcnet.haproxy.drift`)."""
    header: list[str] = []
    first = True
    for line in lines:
        if not line.strip():
            continue
        if first:
            if line.strip() != "1":
                raise RuntimeCommandError(f"unexpected 'show servers state' answer: {line!r}")
            first = False
            continue
        if line.startswith("#"):
            header = line[1:].split()
            continue
        fields = dict(zip(header, line.split(), strict=False))
        yield (fields["be_name"], int(fields["be_id"]), fields["srv_name"],
               int(fields["srv_id"]), fields["srv_addr"], int(fields["srv_op_state"]),
               int(fields["srv_admin_state"]), int(fields["srv_uweight"]),
               int(fields["srv_port"]))


@dataclass
class ProcInfo:
    """``show proc`` on the master: its reload counter, failures and workers."""

    master_pid: int
    reloads: int
    failed: int
    workers: list[tuple[int, int]] = field(default_factory=list)   # (pid, reloads survived)
    old_workers: list[int] = field(default_factory=list)

    @property
    def current_worker(self) -> int | None:
        fresh = [pid for pid, survived in self.workers if survived == 0]
        return fresh[0] if fresh else None


def parse_show_proc(text: str) -> ProcInfo:
    """Pure: parse the master's ``show proc`` (2.6 layout)."""
    info = None
    section = "master"
    for line in text.splitlines():
        if line.startswith("#"):
            title = line.strip("# ").lower()
            section = {"workers": "workers", "old workers": "old",
                       "programs": "programs"}.get(title, section)
            continue
        fields = line.split()
        if len(fields) < 3 or not fields[0].isdigit():
            continue
        if fields[1] == "master":
            failed = 0
            if "[failed:" in line:
                failed = int(line.split("[failed:", 1)[1].split("]", 1)[0])
            info = ProcInfo(int(fields[0]), int(fields[2]), failed)
        elif info is not None and fields[1] == "worker":
            if section == "old":
                info.old_workers.append(int(fields[0]))
            else:
                info.workers.append((int(fields[0]), int(fields[2])))
    if info is None:
        raise RuntimeCommandError(f"unexpected 'show proc' answer: {text[:200]!r}")
    return info


class Runtime:
    """The admin and master sockets of one HAProxy."""

    def __init__(self, admin_socket: str, master_socket: str):
        self.admin_socket, self.master_socket = admin_socket, master_socket
        self.commands = 0       # changing runtime API commands sent (not "show ...")
        self.reloads = 0        # reloads asked for through the master socket

    def command(self, command: str) -> str:
        """A runtime API command; raises RuntimeCommandError when HAProxy refuses it."""
        answer = send(self.admin_socket, command).strip()
        if command.startswith("show "):
            return answer
        self.commands += 1
        lowered = answer.lower()
        if any(word in lowered for word in ("no such", "unknown", "invalid", "require",
                                            "not found", "can't", "cannot", "failed")):
            raise RuntimeCommandError(f"HAProxy refused {command!r}: {answer}")
        return answer

    def servers(self, backend: str | None = None) -> list[ServerRow]:
        """``show servers state`` (of one backend when given)."""
        command = "show servers state" + (f" {backend}" if backend else "")
        return parse_servers_state(send(self.admin_socket, command))

    def servers_state_lines(self) -> Iterator[str]:
        """The lines of ``show servers state`` as they are read (:func:`send_lines`)."""
        return send_lines(self.admin_socket, "show servers state")

    def proc(self) -> ProcInfo:
        return parse_show_proc(send(self.master_socket, "show proc"))

    def worker_command(self, pid: int, command: str) -> str:
        """A command for one (old) worker, through the master socket (``@!PID``)."""
        return send(self.master_socket, f"@!{pid} {command}")

    def set_server(self, backend: str, slot: str, address: str | None = None,
                   port: int | None = None, weight: int | None = None,
                   state: str | None = None) -> None:
        target = f"{backend}/{slot}"
        if address is not None:
            self.command(f"set server {target} addr {address} port {port}")
        if weight is not None:
            self.command(f"set server {target} weight {weight}")
        if state is not None:
            self.command(f"set server {target} state {state}")

    def reload(self, timeout: float = 60.0, poll: float = 0.05) -> ProcInfo:
        """Reload through the master socket; wait for the new worker; raise if it failed."""
        before = self.proc()
        send(self.master_socket, "reload")
        self.reloads += 1
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = self.proc()
            except HAProxyUnavailable:
                info = None          # the master re-executes itself: socket briefly gone
            if info is not None and info.reloads > before.reloads:
                if info.failed > before.failed:
                    raise ReloadFailed(f"HAProxy reload failed (master counts {info.failed} "
                                       "failed reloads); the old worker keeps serving")
                fresh = info.current_worker
                old = {pid for pid, _ in before.workers}
                if fresh is not None and fresh not in old:
                    return info
            if time.monotonic() > deadline:
                raise ReloadFailed(f"no new HAProxy worker within {timeout}s after reload")
            time.sleep(poll)


class ReloadFailed(RuntimeError):
    """The master did not bring up a new worker after a reload."""
