"""The macvlan agent's unix-socket protocol under hostile requests (issue #15).

A real ``agentsocket`` server on a socket in tmp_path (the agent's own server code; its
``serve`` here answers PING with the request it got, as the protocol layer is what is
under test): oversized, truncated, non-JSON, wrong-type and deeply nested requests, a
client that connects and never sends, one that drips a byte at a time, and a hundred of
those at once. Each gets a ``bad request`` error answer (code 6, DECODE_FAILURE) or a
closed connection, never a traceback, and a valid request is still served afterwards.
The exec agent's binary protocol (``dcnet.cni.execd``, DCX1 frames) likewise: bad magic,
lengths over the limits, truncation, foreign environment entries, a dripping client.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time

import pytest

from dcnet.cni import agentproto, agentsocket, execd
from dcnet.cni.errors import DECODE_FAILURE

pytestmark = pytest.mark.unit

VALID = {"proto": 1, "command": "PING", "env": {}, "conf": {"name": "mvnet"}}


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setattr(agentsocket, "REQUEST_TIMEOUT", 1.0)
    served: list[dict] = []
    logs: list[str] = []

    def serve(message: dict) -> dict:
        served.append(message)
        return {"proto": 1, "result": {"command": message["command"]}}

    path = str(tmp_path / "agent.sock")
    made = agentsocket.listen(path, serve, logs.append)
    made.served = served
    yield made
    made.shutdown()
    made.server_close()


def exchange(path: str, data: bytes, shut: bool = True) -> dict | None:
    """Send ``data``, half-close, and return the answer (None: closed without one)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(path)
        # (the server may stop reading (too long) and answer before all is sent)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        if shut:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while not answer.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except ConnectionResetError:
            pass
    return json.loads(answer) if answer else None


def bad_request(answer: dict | None, fragment: str) -> None:
    assert answer is not None and answer["error"]["code"] == DECODE_FAILURE, answer
    assert answer["error"]["msg"].startswith("bad request: ") and fragment in \
        answer["error"]["msg"], answer


def still_serving(server) -> None:
    answer = exchange(server.server_address, agentproto.encode(VALID))
    assert answer == {"proto": 1, "result": {"command": "PING"}}


HOSTILE = {
    "not JSON": (b"{proto: 1}\n", "Expecting"),
    "not UTF-8": (b'{"proto": 1, "x": "\xff"}\n', "can't decode byte 0xff"),
    "JSON, not an object": (b"[1, 2, 3]\n", "not a proto 1 message"),
    "another proto": (b'{"proto": 2}\n', "not a proto 1 message"),
    "nested 100,000 deep": (b'{"proto": 1, "conf": ' + b"[" * 100_000 + b"]" * 100_000 +
                            b"}\n", "nested too deeply"),
    "command not a string": (b'{"proto": 1, "command": ["ADD"], "conf": {}}\n', "command"),
    "env a list": (b'{"proto": 1, "command": "ADD", "env": [1], "conf": {}}\n', "env"),
    "env value a number": (b'{"proto": 1, "command": "ADD", "env": {"CNI_NETNS": 5}, '
                           b'"conf": {}}\n', "env"),
    "conf a string": (b'{"proto": 1, "command": "ADD", "env": {}, "conf": "x"}\n', "conf"),
    "no conf": (b'{"proto": 1, "command": "DEL"}\n', "conf"),
    "truncated": (agentproto.encode(VALID)[:20], "closed before a full message"),
    "empty": (b"", "closed before a full message"),
    "2 MiB without a newline": (b"x" * (2 << 20), "message too long"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_request_gets_a_bad_request_answer(server, name, capfd):
    data, fragment = HOSTILE[name]
    bad_request(exchange(server.server_address, data), fragment)
    still_serving(server)
    assert [m["command"] for m in server.served] == ["PING"]
    assert "Traceback" not in capfd.readouterr().err


def test_a_client_that_never_sends_is_answered_at_the_deadline(server, capfd):
    bad_request(exchange(server.server_address, b"", shut=False), "timed out")
    still_serving(server)
    assert "Traceback" not in capfd.readouterr().err


def test_a_client_that_drips_is_cut_off_at_the_deadline(server):
    """A byte every 50 ms never trips a per-recv timeout; the request's deadline
    (1 s here) ends it long before the 2,000 bytes are sent."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(server.server_address)
        sent = 0
        try:
            for _ in range(2000):
                sock.sendall(b"{")
                sent += 1
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert sent < 2000
    still_serving(server)


def test_a_hundred_idle_clients_do_not_stop_valid_requests(server, capfd):
    idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(100)]
    try:
        for sock in idle:
            sock.connect(server.server_address)
        answers = []
        workers = [threading.Thread(daemon=True, target=lambda: answers.append(
            exchange(server.server_address, agentproto.encode(VALID)))) for _ in range(20)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert answers == [{"proto": 1, "result": {"command": "PING"}}] * 20
    finally:
        for sock in idle:
            sock.close()
    still_serving(server)
    assert "Traceback" not in capfd.readouterr().err


# ---------------------------------------------------------------- the exec agent (DCX1)


@pytest.fixture
def exec_server(tmp_path, monkeypatch):
    monkeypatch.setattr(execd, "READ_TIMEOUT", 1.0)
    logs: list[str] = []
    made = execd.ExecServer(str(tmp_path / "exec"), log=logs.append,
                            handler=lambda env, stdin: (0, b'{"ok": true}', b""))
    made.listen()
    made.logs = logs
    yield made
    made.close()


def exec_exchange(server, data: bytes, shut: bool = True) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(server.path)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        if shut:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        out = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                out += chunk
    return out


EXEC_HOSTILE = {
    "bad magic": (b"HTTP/1.1 GET /\r\n\r\n", "not a DCX1 request"),
    "env length over the limit": (execd.MAGIC + struct.pack(">I", 0xFFFFFFFF),
                                  "environment too large"),
    "stdin length over the limit": (execd.MAGIC + struct.pack(">I", 0) +
                                    struct.pack(">I", 0xFFFFFFFF), "stdin too large"),
    "truncated": (execd.encode_request({"CNI_COMMAND": "ADD"}, b"{}")[:-1],
                  "connection closed mid-request"),
    "env entry not CNI_": (execd.MAGIC + struct.pack(">I", 10) + b"PATH=/bin\0" +
                           struct.pack(">I", 2) + b"{}", "bad environment entry"),
    "empty": (b"", "connection closed mid-request"),
}


@pytest.mark.parametrize("name", sorted(EXEC_HOSTILE))
def test_hostile_exec_request_is_closed_and_logged(exec_server, name, capfd):
    data, fragment = EXEC_HOSTILE[name]
    assert exec_exchange(exec_server, data) == b""
    for _ in range(600):        # the log line follows the close: wait for it
        if any(fragment in line for line in exec_server.logs):
            break
        time.sleep(0.05)
    assert any(fragment in line for line in exec_server.logs), exec_server.logs
    valid = execd.encode_request({"CNI_COMMAND": "ADD"}, b"{}")
    assert execd.decode_reply(exec_exchange(exec_server, valid)) == ("R", 0, b'{"ok": true}',
                                                                     b"")
    assert "Traceback" not in capfd.readouterr().err


def test_exec_client_that_drips_is_cut_off_at_the_deadline(exec_server):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(exec_server.path)
        sock.sendall(execd.MAGIC + struct.pack(">I", 2000))
        sent = 0
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(2000):
                sock.sendall(b"C")
                sent += 1
                time.sleep(0.05)
        assert sent < 2000
    for _ in range(600):        # the log line follows the close: wait for it
        if any("shim request failed" in line for line in exec_server.logs):
            break
        time.sleep(0.05)
    assert any("shim request failed" in line for line in exec_server.logs)
