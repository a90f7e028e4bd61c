"""The agent side of the CNI shim: whole CNI invocations served in the resident agent.

The installed ``dcnet`` is a small C client (``shim/dcnet-cni-shim.c``) that forwards its
CNI invocation, every ``CNI_*`` variable and stdin byte for byte, to the agent of its
network namespace and writes back what the plugin would have written. Here the agent
runs exactly what the Python plugin process runs (``skel.dispatch`` with the
``ModeRouter``: same validation, same kernel work, same error JSON and exit code), only
with everything imported already and without an interpreter start per pod.

Socket: ``<exec dir>/net-<inode of the agent's network namespace>.sock`` (default dir
``/run/dcnet/exec``, 0700; socket 0600), so each node namespace on a host reaches its own
agent and the plugin code runs in the namespace the runtime ran the plugin in. A
connection is served only when the peer is uid 0 (SO_PEERCRED) and in this namespace;
the shim in turn talks only to a uid-0 server. Each connection gets a thread (IPAM takes
its own ``flock``; netlink sockets are per request), so many ADDs run at once. Output
the plugin writes to ``sys.stderr`` (``_log`` lines) is captured per thread.

Wire format (u32 big-endian lengths), one request per connection::

    request  b"DCX1" u32 len, env ("K=V\\0"...), u32 len, stdin
    reply    b"DCX1" b"R" u32 exit code, u32 len, stdout, u32 len, stderr
             b"DCX1" b"F" u32 len, reason      (declined: the shim runs the fallback)

Anything short of a whole ``R`` reply (no socket, refused, declined, the agent killed
mid-request) makes the shim exec the in-process Python plugin with the same input.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable

from dcnet.cni import nsref
from dcnet.cni.agentlock import AgentLock
from dcnet.metrics import cni as cni_metrics

MAGIC = b"DCX1"
DEFAULT_DIR = "/run/dcnet/exec"
MAX_STDIN = 64 << 20
MAX_ENV = 1 << 20
SO_PEERCRED = 17
READ_TIMEOUT = 30.0


class ProtocolError(ValueError):
    """A request or reply that is not the shim protocol's."""


# ---------------------------------------------------------------- framing (pure)

def encode_request(env: dict[str, str], stdin: bytes) -> bytes:
    block = b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items()
                     if k.startswith("CNI_"))
    return b"".join((MAGIC, struct.pack(">I", len(block)), block,
                     struct.pack(">I", len(stdin)), stdin))


def decode_env(block: bytes) -> dict[str, str]:
    env = {}
    for entry in block.split(b"\0"):
        if not entry:
            continue
        key, sep, value = entry.decode("utf-8", "surrogateescape").partition("=")
        if not sep or not key.startswith("CNI_"):
            raise ProtocolError(f"bad environment entry {key!r}")
        env[key] = value
    return env


def decode_request(data: bytes) -> tuple[dict[str, str], bytes]:
    """A whole request -> (env, stdin); ProtocolError if malformed or truncated."""
    if data[:4] != MAGIC or len(data) < 8:
        raise ProtocolError("not a DCX1 request")
    env_len = struct.unpack(">I", data[4:8])[0]
    stdin_at = 8 + env_len
    if len(data) < stdin_at + 4:
        raise ProtocolError("truncated request")
    stdin_len = struct.unpack(">I", data[stdin_at:stdin_at + 4])[0]
    if len(data) != stdin_at + 4 + stdin_len:
        raise ProtocolError("request length mismatch")
    return decode_env(data[8:stdin_at]), data[stdin_at + 4:]


def encode_reply(code: int, stdout: bytes, stderr: bytes) -> bytes:
    return b"".join((MAGIC, b"R", struct.pack(">II", code & 0xFF, len(stdout)), stdout,
                     struct.pack(">I", len(stderr)), stderr))


def encode_decline(reason: str) -> bytes:
    text = reason.encode()
    return MAGIC + b"F" + struct.pack(">I", len(text)) + text


def decode_reply(data: bytes) -> tuple[str, int, bytes, bytes]:
    """("R", code, stdout, stderr) or ("F", 0, reason, b""); ProtocolError otherwise."""
    if data[:4] != MAGIC or len(data) < 9:
        raise ProtocolError("not a DCX1 reply")
    kind = data[4:5]
    if kind == b"F":
        size = struct.unpack(">I", data[5:9])[0]
        return "F", 0, data[9:9 + size], b""
    if kind != b"R" or len(data) < 13:
        raise ProtocolError("not a DCX1 result")
    code, out_len = struct.unpack(">II", data[5:13])
    err_at = 13 + out_len
    if len(data) < err_at + 4:
        raise ProtocolError("truncated reply")
    err_len = struct.unpack(">I", data[err_at:err_at + 4])[0]
    if len(data) != err_at + 4 + err_len:
        raise ProtocolError("reply length mismatch")
    return "R", code, data[13:err_at], data[err_at + 4:]


def read_request(sock) -> bytes:
    """Exactly one request from ``sock`` (lengths checked against the limits)."""
    request, fds = read_request_fds(sock)
    for fd in fds:
        os.close(fd)
    return request


def read_request_fds(sock, deadline: float | None = None) -> tuple[bytes, list[int]]:
    """One request and the descriptors passed with it (SCM_RIGHTS: the shim's open
    CNI_NETNS); the caller closes them. ``deadline`` (``time.monotonic``) bounds the
    whole read (a client dripping bytes never trips a per-recv timeout)."""
    first, fds, _flags, _addr = socket.recv_fds(sock, 8, 4, socket.MSG_CMSG_CLOEXEC)
    try:
        if not first:
            raise ProtocolError("connection closed mid-request")
        head = first + _recv_exact(sock, 8 - len(first), deadline)
        return _read_rest(sock, head, deadline), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _read_rest(sock, head: bytes, deadline: float | None) -> bytes:
    if head[:4] != MAGIC:
        raise ProtocolError("not a DCX1 request")
    env_len = struct.unpack(">I", head[4:])[0]
    if env_len > MAX_ENV:
        raise ProtocolError("environment too large")
    env_and_len = _recv_exact(sock, env_len + 4, deadline)
    stdin_len = struct.unpack(">I", env_and_len[-4:])[0]
    if stdin_len > MAX_STDIN:
        raise ProtocolError("stdin too large")
    return head + env_and_len + _recv_exact(sock, stdin_len, deadline)


def _recv_exact(sock, size: int, deadline: float | None = None) -> bytes:
    chunks, left = [], size
    while left:
        if deadline is not None:
            if deadline <= time.monotonic():
                raise ProtocolError("request not whole in time")
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ProtocolError("connection closed mid-request")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def socket_path(directory: str = DEFAULT_DIR, netns_inode: int | None = None) -> str:
    """Where the agent of the namespace (default: this process's) listens."""
    if netns_inode is None:
        netns_inode = os.stat("/proc/self/ns/net").st_ino
    return f"{directory.rstrip('/')}/net-{netns_inode}.sock"


# ---------------------------------------------------------------- running the plugin

class _ThreadStderr:
    """``sys.stderr`` replacement: writes go to the current request's buffer, if any."""

    def __init__(self, real):
        self.real = real
        self.local = threading.local()

    def write(self, text: str) -> int:
        buffer = getattr(self.local, "buffer", None)
        return (buffer or self.real).write(text)

    def flush(self) -> None:
        buffer = getattr(self.local, "buffer", None)
        (buffer or self.real).flush()

    def __getattr__(self, name):
        return getattr(self.real, name)


_stderr_lock = threading.Lock()


def _capturing_stderr() -> _ThreadStderr:
    with _stderr_lock:
        if not isinstance(sys.stderr, _ThreadStderr):
            sys.stderr = _ThreadStderr(sys.stderr)
        return sys.stderr


def run_plugin(env: dict[str, str], stdin: bytes) -> tuple[int, bytes, bytes]:
    """One CNI invocation as the plugin process would run it: (exit code, stdout, stderr)."""
    from dcnet.cni.plugin import ModeRouter
    from dcnet.cni.skel import dispatch

    started = time.monotonic()
    capture = _capturing_stderr()
    out, err = io.StringIO(), io.StringIO()
    capture.local.buffer = err
    try:
        code = dispatch(ModeRouter(), env, io.BytesIO(stdin), out, err)
    except BaseException:  # the plugin process would die with a traceback: say so
        err.write(traceback.format_exc())
        out.write('{"cniVersion":"1.1.0","code":999,"msg":"dcnet: internal error"}\n')
        code = 1
    finally:
        capture.local.buffer = None
    cni_metrics.operation(env.get("CNI_COMMAND", ""), code, time.monotonic() - started)
    return code, out.getvalue().encode(), err.getvalue().encode("utf-8", "surrogateescape")


def preload() -> None:
    """Import the whole plugin path now, so no request pays for an import."""
    import dcnet.cni.hostgw
    import dcnet.cni.leases
    import dcnet.cni.macvlan
    import dcnet.cni.plugin
    import dcnet.cni.skel
    import dcnet.sysio.netns  # noqa: F401


# ---------------------------------------------------------------- the server

class ExecServer:
    """Serves shim requests on the namespace's socket until ``close``."""

    def __init__(self, directory: str = DEFAULT_DIR,
                 log: Callable[[str], None] | None = None,
                 handler: Callable[[dict, bytes], tuple[int, bytes, bytes]] = run_plugin):
        self.directory = directory
        self.log = log or (lambda text: print(f"dcnet-agent: {text}", file=sys.stderr,
                                              flush=True))
        self.handler = handler
        self.netns = os.stat("/proc/self/ns/net")
        self.path = socket_path(directory, self.netns.st_ino)
        self.lock = AgentLock(self.path.removesuffix(".sock") + ".lock")
        self.sock: socket.socket | None = None
        self.inode = 0
        self.stopping = threading.Event()
        self.active = 0
        self.idle = threading.Condition()

    def listen(self) -> None:
        """Bind the socket (0600, created under a temporary name and renamed into place)."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        if os.path.exists(self.path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.path)
            except OSError:
                os.unlink(self.path)  # a dead agent's socket
            else:
                raise RuntimeError(f"another dcnet-agent serves this namespace at {self.path}")
            finally:
                probe.close()
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(temporary)
        os.chmod(temporary, 0o600)
        sock.listen(256)
        os.replace(temporary, self.path)
        self.sock, self.inode = sock, os.stat(self.path).st_ino
        preload()
        _capturing_stderr()
        threading.Thread(target=self._accept, name="cni-exec", daemon=True).start()
        self.log(f"serving CNI invocations on {self.path}")

    def _accept(self) -> None:
        sock = self.sock
        while not self.stopping.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                if self.stopping.is_set():
                    return
                continue
            with self.idle:
                self.active += 1
            threading.Thread(target=self._serve, args=(conn,), name="cni-request",
                             daemon=True).start()

    def _peer_problem(self, conn: socket.socket) -> str | None:
        creds = conn.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        if uid != 0:
            return f"uid {uid} is not root"
        try:
            peer = os.stat(f"/proc/{pid}/ns/net")
        except PermissionError:
            # No CAP_SYS_PTRACE (a DaemonSet granting only NET_ADMIN and SYS_ADMIN): the
            # shim picked this socket by its own namespace's inode (net-<ino>.sock).
            return None
        except OSError as exc:
            return f"cannot see the namespace of pid {pid}: {exc}"
        if (peer.st_dev, peer.st_ino) != (self.netns.st_dev, self.netns.st_ino):
            return f"pid {pid} is in another network namespace"
        return None

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                problem = self._peer_problem(conn)
                if problem and problem.startswith("uid"):
                    self.log(f"refused a shim connection: {problem}")
                    return
                conn.settimeout(READ_TIMEOUT)
                request, fds = read_request_fds(conn, time.monotonic() + READ_TIMEOUT)
                try:
                    env, stdin = decode_request(request)
                    conn.settimeout(None)
                    if problem or self.stopping.is_set():  # (read first: a clean F)
                        conn.sendall(encode_decline(problem or "the agent is stopping"))
                        return
                    # the pod's namespace through the shim's descriptor (nsref)
                    with nsref.pinned(env.get("CNI_NETNS", ""), fds[0] if fds else None):
                        code, out, err = self.handler(env, stdin)
                finally:
                    for fd in fds:
                        os.close(fd)
                conn.sendall(encode_reply(code, out, err))
        except (OSError, ProtocolError) as exc:
            self.log(f"shim request failed: {type(exc).__name__}: {exc}")
        finally:
            with self.idle:
                self.active -= 1
                self.idle.notify_all()

    def serve_when_owner(self) -> None:
        """Listen now if no other agent serves this namespace; else stand by in a thread
        and listen as soon as that agent exits (``AgentLock``)."""
        if self.lock.try_acquire():
            self.listen()
            return

        def standby() -> None:
            if self.lock.acquire(self.stopping, self.log,
                                 "CNI invocations in this network namespace"):
                try:
                    self.listen()
                except (OSError, RuntimeError) as exc:
                    self.log(f"not serving CNI invocations: {exc}")
        threading.Thread(target=standby, name="cni-exec-standby", daemon=True).start()

    def close(self, grace: float = 10.0) -> None:
        """Stop accepting, let requests in flight finish (up to ``grace`` s), unlink."""
        self.stopping.set()
        if self.sock is not None:
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == self.inode:  # not a successor's
                    os.unlink(self.path)
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
            self.sock = None
        with self.idle:
            self.idle.wait_for(lambda: self.active == 0, timeout=grace)
        self.lock.release()  # a standby takes over from here


def start(directory: str = DEFAULT_DIR, log: Callable[[str], None] | None = None
          ) -> ExecServer | None:
    """Start serving (or stand by while another agent serves this namespace), or log why
    not and return None (the shim then falls back)."""
    server = ExecServer(directory, log)
    try:
        server.serve_when_owner()
    except (OSError, RuntimeError) as exc:
        server.log(f"not serving CNI invocations: {exc}")
        return None
    from dcnet.cni import reaper

    reaper.enable(server.log)  # DEL retires host veths; this process deletes them
    return server
