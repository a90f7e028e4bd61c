"""Keep-alive peers for HAProxy drain tests and bench/haproxy_keepalive.py (lab only).

Run by path inside a lab namespace:

- ``server PORT ADDRESS LOG``: an HTTP/1.1 real server (keep-alive), 200 ``ok ADDRESS``
  to every GET; each request for ``/`` (not health checks) appends its time as one line
  to LOG, so a test counts what a server received after it was removed;
- ``client HOST:PORT OUT STOPFILE [--connections N] [--interval S]``: N threads, each
  with ONE persistent HTTP/1.1 connection (``http.client``), a request every S seconds;
  a failed request is recorded (time, reason) and the thread reconnects. It rewrites OUT
  (JSON: ok, failures, answers per server, last answer time per server) every 0.2 s and
  at the end (when STOPFILE appears). It only targets the address it is given.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import sys
import threading
import time


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = f"ok {self.server.name}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.path == "/":
            with self.server.log_lock:
                self.server.log.write(f"{time.time():.4f}\n")
                self.server.log.flush()

    def log_message(self, *args) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 512
    daemon_threads = True


def serve(port: int, address: str, log: str) -> None:
    server = _Server((address, port), _Handler)
    server.name = address
    server.log = open(log, "a", buffering=1)    # noqa: SIM115 - lives as long as the server
    server.log_lock = threading.Lock()
    server.serve_forever()


class Client:
    def __init__(self, target: str, connections: int, interval: float):
        host, _, port = target.rpartition(":")
        self.host, self.port, self.interval = host, int(port), interval
        self.lock = threading.Lock()
        self.ok = 0
        self.failures: list[tuple[float, str]] = []
        self.per_server: dict[str, int] = {}
        self.last: dict[str, float] = {}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True)
                        for _ in range(connections)]

    def run(self) -> None:
        conn = None
        while not self.stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                conn.request("GET", "/", headers={"Host": "lab"})
                answer = conn.getresponse()
                body = answer.read().decode(errors="replace")
                if answer.status != 200:
                    raise RuntimeError(f"status {answer.status}")
                server = body.split()[-1] if body.startswith("ok ") else "?"
                with self.lock:
                    self.ok += 1
                    self.per_server[server] = self.per_server.get(server, 0) + 1
                    self.last[server] = time.time()
                if answer.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException, RuntimeError) as exc:
                with self.lock:
                    self.failures.append((time.time(), str(exc) if isinstance(
                        exc, RuntimeError) else type(exc).__name__))
                conn.close()
                conn = None
            time.sleep(self.interval)

    def snapshot(self) -> dict:
        with self.lock:
            return {"ok": self.ok, "failures": list(self.failures),
                    "per_server": dict(self.per_server), "last": dict(self.last)}


def client(target: str, out: str, stop_file: str, connections: int, interval: float) -> None:
    load = Client(target, connections, interval)
    for thread in load.threads:
        thread.start()
    while not os.path.exists(stop_file):
        _write(out, load.snapshot())
        time.sleep(0.2)
    load.stop.set()
    for thread in load.threads:
        thread.join(15)
    _write(out, load.snapshot())


def _write(path: str, data: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("port", type=int)
    s.add_argument("address")
    s.add_argument("log")
    c = sub.add_parser("client")
    c.add_argument("target")
    c.add_argument("out")
    c.add_argument("stop_file")
    c.add_argument("--connections", type=int, default=4)
    c.add_argument("--interval", type=float, default=0.01)
    args = parser.parse_args(argv)
    if args.mode == "server":
        serve(args.port, args.address, args.log)
    else:
        client(args.target, args.out, args.stop_file, args.connections, args.interval)


if __name__ == "__main__":
    main(sys.argv[1:])
