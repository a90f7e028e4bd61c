"""The plugin <-> node agent protocol: one CNI invocation per unix-socket connection.

A request is the CNI invocation itself, so any mode's command can be served by the
resident agent (macvlan/DHCP today; host-gw's ADD is the same shape when it moves
there): one JSON object and a newline,

    {"proto": 1, "command": "ADD|DEL|CHECK|STATUS|GC|PING",
     "env": {"CNI_CONTAINERID": ..., "CNI_NETNS": ..., "CNI_IFNAME": ..., "CNI_ARGS": ...,
             "CNI_PATH": ...},
     "conf": {the plugin's stdin config, name/cniVersion/prevResult/runtimeConfig included}}

and the answer is one JSON line, ``{"proto": 1, "result": {...}}`` (the 1.1.0 form; the
plugin converts it to the config's version) or ``{"proto": 1, "error": {"code", "msg",
"details"}}`` with the CNI error code the plugin reports as is. The agent listens on a
socket of mode 0600 and accepts only uid 0 peers (SO_PEERCRED). The plugin passes the
pod's namespace as an open descriptor with the request (SCM_RIGHTS) when it has one
(``dcnet.cni.nsref``): the agent may not see ``CNI_NETNS`` in its mount namespace.

This module is the client half (stdlib ``_socket`` and ``cjson`` only: it runs in the
per-pod plugin process) plus the framing both halves share. The server half refuses,
with a ``bad request`` error answer, a line over ``MAX_MESSAGE`` bytes (reading stops
there), one not whole by its deadline (a client that connects and never sends, or
drips), one that is not JSON or nested past the parser's recursion limit, and a request
of the wrong shape (:func:`check_request`).
"""

from __future__ import annotations

import _socket
from errno import EAGAIN
from sys import byteorder
from time import monotonic, sleep

from dcnet.cni import cjson

PROTO = 1
MAX_MESSAGE = 1 << 20
ENV_KEYS = ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")


class Unreachable(OSError):
    """No agent answered on the socket (missing, refused, timed out, hung up)."""


def request(command: str, env: dict, conf: dict) -> dict:
    return {"proto": PROTO, "command": command,
            "env": {k: env[k] for k in ENV_KEYS if env.get(k)}, "conf": conf}


def encode(message: dict) -> bytes:
    return (cjson.dumps(message) + "\n").encode()


def decode(line: bytes) -> dict:
    try:
        message = cjson.loads(line)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(message, dict) or message.get("proto") != PROTO:
        raise ValueError(f"not a proto {PROTO} message")
    return message


def check_request(message: dict) -> dict:
    """``message`` if it has a request's shape (command a string, env a mapping of
    strings, conf a mapping); ValueError naming the field otherwise."""
    if not isinstance(message.get("command"), str):
        raise ValueError("command: not a string")
    env = message.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                            for k, v in env.items()):
        raise ValueError("env: not a mapping of strings to strings")
    if not isinstance(message.get("conf"), dict):
        raise ValueError("conf: not a mapping")
    return message


def read_line(sock, limit: int = MAX_MESSAGE, deadline: float | None = None) -> bytes:
    """Bytes up to the first newline; ConnectionError when the peer hangs up first,
    TimeoutError when ``deadline`` (``time.monotonic``) passes first."""
    chunks, size = [], 0
    while True:
        if deadline is not None:
            left = deadline - monotonic()
            if left <= 0:
                raise TimeoutError("no whole request line in time")
            sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before a full message")
        newline = chunk.find(b"\n")
        if newline >= 0:
            chunks.append(chunk[:newline])
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise ValueError("message too long")


def connect(path: str, timeout: float):
    """A socket connected to ``path``, retrying while the listen backlog is full (EAGAIN:
    a burst of invocations) until ``timeout``; OSError otherwise (missing, refused)."""
    deadline = monotonic() + timeout
    pause = 0.002
    while True:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(max(deadline - monotonic(), 0.001))
            sock.connect(path)
            return sock
        except BlockingIOError:
            sock.close()
            left = deadline - monotonic()
            if left <= 0:
                raise OSError(EAGAIN, f"its listen backlog stayed full for {timeout:g}s "
                              "(try again later)") from None
            sleep(min(pause, left))
            pause = min(pause * 2, 0.05)
        except BaseException:
            sock.close()
            raise


def call(path: str, message: dict, timeout: float, fd: int | None = None) -> dict:
    """Send one request to the agent at ``path`` and return its decoded answer.

    Unreachable when nobody listens, the agent's backlog stays full, the answer does not
    come within ``timeout`` seconds (one deadline for all of it) or the connection drops;
    ValueError for an answer that is not the protocol's. ``fd`` (the pod's namespace as
    the plugin opened it) travels with the request (SCM_RIGHTS).
    """
    deadline = monotonic() + timeout
    try:
        sock = connect(path, timeout)
    except OSError as exc:
        raise Unreachable(exc.errno or 0, f"dcnet-agent at {path}: {exc}") from None
    try:
        try:
            sock.settimeout(max(deadline - monotonic(), 0.001))
            data = encode(message)
            if fd is not None:
                ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                              fd.to_bytes(4, byteorder))]
                data = data[sock.sendmsg([data], ancillary):]
            if data:  # (a send of nothing to an agent that already answered: EPIPE)
                sock.sendall(data)
            line = read_line(sock)
        except (OSError, ConnectionError) as exc:
            raise Unreachable(getattr(exc, "errno", None) or 0,
                              f"dcnet-agent at {path}: {exc}") from None
    finally:
        sock.close()
    return decode(line)
