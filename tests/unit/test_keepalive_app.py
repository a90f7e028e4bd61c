"""dcnet/lab/keepalive_app.py, the LVS roll's app, run for real on loopback: it keeps a
connection alive across requests, and on SIGTERM it closes an idle connection, answers a
request in flight with ``Connection: close``, stops accepting and dies of SIGTERM."""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from dcnet.lab import init_lvs_lab

WAIT = 60.0     # bounds every wait (a loaded host); nothing here asserts a duration


def _listening(port: int) -> bool:
    """Whether a socket listens on ``port`` (any IPv4 address), from /proc/net/tcp."""
    with open("/proc/net/tcp") as table:
        next(table)
        return any(fields[1].endswith(f":{port:04X}") and fields[3] == "0A"
                   for fields in (line.split() for line in table))


@pytest.fixture
def app():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-I", "-S", init_lvs_lab.APP, str(port), "rs9"],
                            stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + WAIT
    # listening, seen without connecting: a probe connection would be one more the app
    # counts as open at SIGTERM until its thread has read the probe's end
    while not _listening(port):
        assert time.monotonic() < deadline and proc.poll() is None, "the app did not start"
        time.sleep(0.05)
    yield proc, port
    if proc.poll() is None:
        proc.kill()
    proc.wait(WAIT)
    proc.stdout.close()


def _request(sock: socket.socket, head: bytes = b"GET /id HTTP/1.1\r\nHost: lab\r\n\r\n") -> bytes:
    sock.sendall(head)
    return _answer(sock)


def _answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"rs9"):
        chunk = sock.recv(4096)
        assert chunk, f"closed before a whole answer: {data!r}"
        data += chunk
    return data


def _closed(sock: socket.socket) -> bool:
    ready, _, _ = select.select([sock], [], [], WAIT)
    try:
        return bool(ready) and sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def _line(proc) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], WAIT)
    assert ready, "the app printed nothing"
    return proc.stdout.readline()


def test_one_connection_serves_many_requests(app):
    _proc, port = app
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        for _ in range(3):
            answer = _request(sock)
            assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nrs9")
            assert b"connection: close" not in answer.lower()


def test_sigterm_closes_idle_connection_and_dies_of_sigterm(app):
    proc, port = app
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        _request(sock)                                  # kept alive, now idle
        proc.send_signal(signal.SIGTERM)
        assert _closed(sock)
    assert proc.wait(WAIT) == -signal.SIGTERM
    assert "SIGTERM with 1 connection(s) open" in _line(proc)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()


def test_sigterm_answers_request_in_flight_with_connection_close(app):
    proc, port = app
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        _request(sock)              # accepted (a connection still in the backlog is reset)
        # a head not finished; on loopback it is in the app's socket before the SIGTERM
        sock.sendall(b"GET /id HTTP/1.1\r\nHost: lab\r\n")
        proc.send_signal(signal.SIGTERM)
        assert "SIGTERM" in _line(proc)
        answer = _request(sock, b"\r\n")
        assert answer.startswith(b"HTTP/1.1 200 ") and b"Connection: close\r\n" in answer
        assert _closed(sock)
    assert proc.wait(WAIT) == -signal.SIGTERM
