"""The connection-rate programs: a tiny accept-and-close server and a bounded client.

Run as ``python -m dcnet.netbench.connprog server --host A --port P`` inside the server
namespace and ``... client --host A --port P --duration S --max N --timeout T`` inside the
client namespace. Each client connection is a whole short TCP life: connect (handshake),
wait for the server's FIN (the server accepts and closes at once, so TIME_WAIT stays on
the server side and the client's ephemeral ports do not run out), close. The client is
bounded by wall time, by a connection count and by a per-connection timeout, and prints
one JSON line: connections, failures by errno name, the measured seconds and the
address family of the last connection made.
IPv6 addresses work as they are (the server listens on an AF_INET6 socket for them).
Standard library only; nothing here is timed by tests.
"""

from __future__ import annotations

import argparse
import errno
import json
import socket
import sys
import time


def serve(host: str, port: int) -> None:
    """Accept and immediately close connections until killed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family, backlog=4096)
    while True:
        try:
            conn, _ = listener.accept()
        except InterruptedError:
            continue
        conn.close()


def one_connection(host: str, port: int, timeout: float) -> str:
    """One whole connection life; returns its address family's name (AF_INET6)."""
    with socket.create_connection((host, port), timeout=timeout) as conn:
        while conn.recv(64):
            pass
        return conn.family.name


def run_client(host: str, port: int, duration: float, max_connections: int,
               timeout: float) -> dict:
    """Open connections one after another until ``duration`` or ``max_connections``."""
    done = 0
    failures: dict[str, int] = {}
    family = None
    started = time.monotonic()
    deadline = started + duration
    while done + sum(failures.values()) < max_connections:
        now = time.monotonic()
        if now >= deadline:
            break
        try:
            family = one_connection(host, port, timeout)
            done += 1
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
            failures[name] = failures.get(name, 0) + 1
    seconds = time.monotonic() - started
    return {"tool": "dcnet-connrate", "version": 1, "connections": done,
            "failures": failures, "seconds": seconds, "family": family}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="connprog")
    sub = parser.add_subparsers(dest="role", required=True)
    server = sub.add_parser("server")
    client = sub.add_parser("client")
    for each in (server, client):
        each.add_argument("--host", required=True)
        each.add_argument("--port", type=int, required=True)
    client.add_argument("--duration", type=float, required=True)
    client.add_argument("--max", type=int, default=1_000_000)
    client.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.role == "server":
        serve(args.host, args.port)
        return 0
    result = run_client(args.host, args.port, args.duration, args.max, args.timeout)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
