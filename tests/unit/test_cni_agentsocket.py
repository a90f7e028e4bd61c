"""The macvlan agent's socket under a burst (issue 13, defect 4): the server's listen
backlog holds a burst of connections that are not accepted yet, and the plugin's client
retries a full backlog (EAGAIN) until its deadline instead of failing at once."""

from __future__ import annotations

import errno
import socket
import threading

import pytest

from dcnet.cni import agentproto
from dcnet.cni.agentsocket import BACKLOG, AgentServer

pytestmark = pytest.mark.unit


def _fill(path: str) -> list[socket.socket]:
    """Non-blocking connects to ``path`` until its backlog is full (EAGAIN)."""
    queued = []
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex(path)
        if code == errno.EAGAIN:
            sock.close()
            return queued
        assert code == 0, errno.errorcode.get(code)
        queued.append(sock)
        assert len(queued) <= 4 * BACKLOG, "the backlog never filled"


def test_agent_server_queues_a_burst_before_accepting(tmp_path):
    path = str(tmp_path / "agent.sock")
    server = AgentServer(path, lambda message: {}, lambda text: None)  # not accepting
    try:
        queued = _fill(path)
        try:
            assert len(queued) >= 64  # socketserver's default backlog held 6
        finally:
            for sock in queued:
                sock.close()
    finally:
        server.server_close()


def _listener(path: str) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    return listener


def test_client_gives_up_on_a_full_backlog_only_at_its_deadline(tmp_path):
    path = str(tmp_path / "agent.sock")
    listener = _listener(path)
    queued = _fill(path)
    try:
        with pytest.raises(agentproto.Unreachable) as failed:
            agentproto.call(path, agentproto.request("PING", {}, {}), 0.3)
        assert failed.value.errno == errno.EAGAIN
        assert "backlog stayed full for 0.3s" in str(failed.value)
    finally:
        for sock in queued:
            sock.close()
        listener.close()


def test_client_gets_in_once_the_backlog_drains(tmp_path):
    path = str(tmp_path / "agent.sock")
    listener = _listener(path)
    queued = _fill(path)
    answers: list[dict] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            answers.append(agentproto.call(path, agentproto.request("PING", {}, {}), 30))
        except BaseException as exc:
            errors.append(exc)
    thread = threading.Thread(daemon=True, target=client)
    thread.start()
    listener.settimeout(30)  # a client that gave up never connects: fail, do not hang
    try:
        for _ in queued:  # the agent catches up with the burst
            listener.accept()[0].close()
        while True:
            conn, _ = listener.accept()
            with conn:
                try:
                    line = agentproto.read_line(conn)
                except ConnectionError:
                    continue  # a filler connection, closed without a request
                assert agentproto.decode(line)["command"] == "PING"
                conn.sendall(agentproto.encode({"proto": agentproto.PROTO,
                                                "result": {"agent": 1}}))
                break
    finally:
        thread.join()
        for sock in queued:
            sock.close()
        listener.close()
    if errors:
        raise errors[0]
    assert answers == [{"proto": agentproto.PROTO, "result": {"agent": 1}}]
