"""A bounded HTTP load loop, run inside a lab namespace to count failed requests.

``python -m dcnet.lab.haproxy_loadgen --target 10.0.0.1:80 --out result.json`` runs
``--concurrency`` threads, each doing one HTTP/1.0 request per new TCP connection, until
``--duration`` seconds, ``--max-requests`` requests or the ``--stop-file`` appears.
Anything but a complete ``200`` answer is a failure (with its reason and time). It
writes ``--ready-file`` after the first success, and the JSON result at the end.
It only ever targets the address it is given (a lab address).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import threading
import time
from collections import Counter

from dcnet.sysio.files import atomic_write


def one_request(host: str, port: int, timeout: float) -> str | None:
    """None on a complete 200 answer, else the reason it failed."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\nHost: lab\r\n\r\n")
            chunks = []
            while data := sock.recv(65536):
                chunks.append(data)
    except OSError as exc:
        return type(exc).__name__
    answer = b"".join(chunks)
    status = answer.split(b"\r\n", 1)[0]
    if not status.startswith(b"HTTP/1.") or status.split()[1:2] != [b"200"]:
        return f"status {status[:40]!r}"
    return None


class Load:
    def __init__(self, host: str, port: int, max_requests: int, timeout: float):
        self.host, self.port, self.timeout = host, port, timeout
        self.max_requests = max_requests
        self.lock = threading.Lock()
        self.ok = 0
        self.failed: list[tuple[float, str]] = []
        self.started = time.time()
        self.stop = threading.Event()

    def worker(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                if self.ok + len(self.failed) >= self.max_requests:
                    self.stop.set()
                    return
            reason = one_request(self.host, self.port, self.timeout)
            with self.lock:
                if reason is None:
                    self.ok += 1
                else:
                    self.failed.append((time.time(), reason))

    def result(self) -> dict:
        return {"ok": self.ok, "failed": len(self.failed),
                "reasons": dict(Counter(r for _, r in self.failed)),
                "failure_times": [t for t, _ in self.failed[:1000]],
                "started": self.started, "duration": time.time() - self.started}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="ADDRESS:PORT")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--stop-file")
    parser.add_argument("--ready-file")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    load = Load(host.strip("[]"), int(port), args.max_requests, args.timeout)
    threads = [threading.Thread(target=load.worker, daemon=True)
               for _ in range(args.concurrency)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + args.duration
    ready_written = False
    while not load.stop.is_set() and time.monotonic() < deadline:
        if args.stop_file and os.path.exists(args.stop_file):
            break
        if args.ready_file and not ready_written and load.ok:
            with open(args.ready_file, "w") as handle:
                handle.write("ready\n")
            ready_written = True
        time.sleep(0.02)
    load.stop.set()
    for thread in threads:
        thread.join(args.timeout + 1)
    atomic_write(args.out, json.dumps(load.result()), fsync=False)


if __name__ == "__main__":
    main()
