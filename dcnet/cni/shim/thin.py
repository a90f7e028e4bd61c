"""The shim in Python: the C client's protocol on ``_socket`` and ``posix`` only.

Not installed by default: ``dcnet-cni install --client python`` writes it (with EXEC_DIR
and FALLBACK prepended) for comparison with the C shim in ``bench/cni_add.py``. It is
run as ``python -I -S``; it imports no dcnet module, so its cost is the interpreter's
start-up plus a few builtin modules. Same behaviour as ``dcnet-cni-shim.c``.
"""

import _socket
import posix
import sys

EXEC_DIR = globals().get("EXEC_DIR", "/run/dcnet/exec")
FALLBACK = globals().get("FALLBACK", "/opt/cni/bin/dcnet-python")


def _u32(value):
    return value.to_bytes(4, "big")


def _fallback(stdin, why):
    if why:
        sys.stderr.write(f"dcnet: {why}; running the plugin in-process\n")
        sys.stderr.flush()
    if stdin is not None:
        fd = posix.memfd_create("dcnet-stdin", 0)
        posix.write(fd, stdin)
        posix.lseek(fd, 0, 0)
        posix.dup2(fd, 0)
        posix.close(fd)
    posix.execv(FALLBACK, [FALLBACK])


def main():
    env = posix.environ
    command = env.get(b"CNI_COMMAND", b"")
    ino = posix.stat("/proc/self/ns/net").st_ino
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(f"{EXEC_DIR}/net-{ino}.sock")
        uid = int.from_bytes(sock.getsockopt(_socket.SOL_SOCKET, 17, 12)[4:8], sys.byteorder)
        if uid != 0:
            raise OSError("agent is not root")
    except OSError:
        sock.close()
        _fallback(None, None)
    stdin = b""
    if command and command != b"VERSION":
        chunks = []
        while True:
            chunk = posix.read(0, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        stdin = b"".join(chunks)
    block = b"".join(k + b"=" + v + b"\0" for k, v in env.items() if k.startswith(b"CNI_"))
    try:
        sock.sendall(b"DCX1" + _u32(len(block)) + block + _u32(len(stdin)) + stdin)
        chunks = []
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        _fallback(stdin, "lost the connection to dcnet-agent mid-request")
    reply = b"".join(chunks)
    if reply[:5] == b"DCX1F":
        _fallback(stdin, None)
    if reply[:5] != b"DCX1R" or len(reply) < 13:
        _fallback(stdin, "dcnet-agent closed the connection without an answer")
    code = int.from_bytes(reply[5:9], "big")
    out_len = int.from_bytes(reply[9:13], "big")
    out = reply[13:13 + out_len]
    err_len = int.from_bytes(reply[13 + out_len:17 + out_len], "big")
    err = reply[17 + out_len:]
    if len(out) != out_len or len(err) != err_len:
        _fallback(stdin, "truncated answer from dcnet-agent")
    _write_all(1, out)
    _write_all(2, err)
    posix._exit(code)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[posix.write(fd, view):]


main()
