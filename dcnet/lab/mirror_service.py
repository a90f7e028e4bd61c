"""A deterministic HTTP/1.1 test service that logs every request, and a client.

It owns the service the mirror tests and bench use as production server, replay target
and diff candidate: each request is answered with a body derived only from its method,
path and body (``--variant`` changes answers on purpose, for diffing), and logged as a
JSON line ``{"src": "IP:PORT", "method": …, "path": …}`` so deliveries can be counted.
:func:`http_sessions` is the matching client: keep-alive sessions of a few requests,
each answer read before the next request is sent.

Run: ``python -m dcnet.lab.mirror_service --bind ADDR --port P --log FILE``

Lab tooling (moved out of the product package): the mirror's product code needs only
:func:`dcnet.mirror.replay.read_response`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from dcnet.mirror.replay import read_response


def answer_body(method: str, path: str, body: bytes, variant: str = "") -> bytes:
    digest = hashlib.sha256(method.encode() + path.encode() + body).hexdigest()[:16]
    if variant and path.endswith("/changed"):
        digest = "X" + digest[1:]
    return f"{method} {path} {digest}\n".encode()


def serve(bind: str, port: int, log_path: str, variant: str = "") -> None:
    lock = threading.Lock()
    log = open(log_path, "a")  # noqa: SIM115 - open for the server's life

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True   # headers and body are two writes

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with lock:
                log.write(json.dumps({"src": "{}:{}".format(*self.client_address),
                                      "method": self.command, "path": self.path}) + "\n")
                log.flush()
            data = answer_body(self.command, self.path, body, variant)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _handle

        def log_message(self, *args) -> None:
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 1024
    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in bind else socket.AF_INET

    with Server((bind, port), Handler) as server:
        server.serve_forever()


def read_log(path: str) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def request_bytes(host: str, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: dcnet-mirror\r\n\r\n".encode()


def http_sessions(address: str, port: int, sessions: int, requests: int,
                  tag: str = "s", timeout: float = 10.0) -> dict[int, bytes]:
    """Run sessions one after another; returns {client port: bytes sent}."""
    sent: dict[int, bytes] = {}
    for s in range(sessions):
        with socket.create_connection((address, port), timeout=timeout) as sock:
            total = b""
            rest = b""
            for r in range(requests):
                data = request_bytes(address, f"/{tag}{s}/r{r}")
                sock.sendall(data)
                total += data
                _, rest = read_response(sock, rest)
            sent[sock.getsockname()[1]] = total
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dcnet.lab.mirror_service")
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--variant", default="")
    args = parser.parse_args(argv)
    serve(args.bind, args.port, args.log, args.variant)
    return 0


if __name__ == "__main__":
    sys.exit(main())
