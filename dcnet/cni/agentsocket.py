"""The macvlan agent's unix-socket server: one CNI invocation per connection.

``listen(path, serve, log)`` refuses to start beside a live agent on ``path`` (a dead
agent's socket is removed), creates the socket with mode 0600 and a listen backlog of
``BACKLOG`` (socketserver's default of 5 made bursts of pods fail), accepts only uid 0
peers (SO_PEERCRED) and answers each connection's request (``dcnet.cni.agentproto``) with
``serve(message) -> answer`` in its own thread; a request line not whole within
``REQUEST_TIMEOUT`` or of the wrong shape gets a ``bad request`` answer instead. A
descriptor passed with the request (SCM_RIGHTS: the pod's namespace as the plugin
opened it) is pinned for that thread (``dcnet.cni.nsref``) while it serves, then closed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable

from dcnet.cni import agentproto, nsref
from dcnet.cni.errors import DECODE_FAILURE

SO_PEERCRED = 17
BACKLOG = 256  # as the exec agent's (dcnet.cni.execd): a burst of pods queues, not fails
REQUEST_TIMEOUT = 30.0  # to read a whole request line (a client that never sends, or drips)


class AgentServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Threaded unix-stream server calling ``serve`` for each request (root peers only)."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = BACKLOG

    def __init__(self, path: str, serve: Callable[[dict], dict],
                 log: Callable[[str], None]):
        self.serve, self.log = serve, log
        super().__init__(path, _Handler)

    def verify_request(self, request, client_address) -> bool:
        creds = request.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid != 0:
            self.log(f"refused a connection from uid {uid} (root only)")
        return uid == 0


class _Handler(socketserver.BaseRequestHandler):
    server: AgentServer

    def handle(self) -> None:
        sock = self.request
        sock.settimeout(REQUEST_TIMEOUT)
        deadline = time.monotonic() + REQUEST_TIMEOUT   # the whole request, not each recv
        fds: list[int] = []
        try:
            try:
                first, fds, _flags, _addr = socket.recv_fds(sock, 65536, 4,
                                                            socket.MSG_CMSG_CLOEXEC)
                message = agentproto.check_request(
                    agentproto.decode(_line(sock, first, deadline)))
            except (OSError, ValueError, ConnectionError) as exc:
                answer = {"proto": agentproto.PROTO, "error": {
                    "code": DECODE_FAILURE, "msg": f"bad request: {exc}"}}
            else:
                netns = str((message.get("env") or {}).get("CNI_NETNS") or "")
                with nsref.pinned(netns, fds[0] if fds else None):
                    answer = self.server.serve(message)
        finally:
            for fd in fds:
                os.close(fd)
        with contextlib.suppress(OSError):
            sock.sendall(agentproto.encode(answer))


def _line(sock, first: bytes, deadline: float) -> bytes:
    """The request line: ``first`` (the bytes that came with the descriptors) and more."""
    if not first:
        raise ConnectionError("connection closed before a full message")
    newline = first.find(b"\n")
    if newline >= 0:
        return first[:newline]
    return first + agentproto.read_line(sock, agentproto.MAX_MESSAGE - len(first), deadline)


def listen(path: str, serve: Callable[[dict], dict],
           log: Callable[[str], None]) -> AgentServer:
    """Serve ``path`` in a daemon thread; RuntimeError when another agent serves it."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # a dead agent's socket
        else:
            raise RuntimeError(f"another dcnet-agent is serving {path}")
        finally:
            probe.close()
    old_umask = os.umask(0o177)
    try:
        server = AgentServer(path, serve, log)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    threading.Thread(target=server.serve_forever, name="agent-socket", daemon=True).start()
    log(f"serving {path}")
    return server
