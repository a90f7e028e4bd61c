"""Health of the app under dcnet-init: checks with rise/fall, and the health endpoint.

TCP and HTTP checks run in one checker thread (they start no process); command checks
are started by the supervisor as its own children (so the reaper never races a
``subprocess`` wait) and report here through :meth:`Health.record`. The endpoint
(``GET /health``) answers 200 while the app is healthy and not draining, else 503 with
the phase; ``GET /debug`` returns the app's last output kept in debug mode.
"""

from __future__ import annotations

import socket
import threading
import time

from dcnet.init.config import Check


class Health:
    """Rise/fall counting over check results; thread-safe."""

    def __init__(self, rise: int, fall: int):
        self.rise, self.fall = rise, fall
        self.healthy = False
        self.phase = "starting"
        self.last_output = ""
        self._ok_run = self._bad_run = 0
        self._lock = threading.Lock()
        self.changed = threading.Event()

    def record(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self._ok_run, self._bad_run = self._ok_run + 1, 0
                if not self.healthy and self._ok_run >= self.rise:
                    self.healthy = True
                    self.changed.set()
            else:
                self._bad_run, self._ok_run = self._bad_run + 1, 0
                if self.healthy and self._bad_run >= self.fall:
                    self.healthy = False
                    self.changed.set()

    def serving(self) -> bool:
        return self.healthy and self.phase == "serving"


def probe(check: Check, timeout: float) -> bool:
    """One TCP or HTTP probe (HTTP: any 2xx/3xx answer)."""
    import http.client  # here, not at start-up: most apps use a TCP check
    import urllib.parse

    try:
        if check.kind == "tcp":
            host, _, port = check.target.rpartition(":")
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return True
        url = urllib.parse.urlsplit(check.target)
        cls = (http.client.HTTPSConnection if url.scheme == "https"
               else http.client.HTTPConnection)
        conn = cls(url.hostname, url.port, timeout=timeout)
        try:
            conn.request("GET", url.path or "/" + (f"?{url.query}" if url.query else ""))
            return 200 <= conn.getresponse().status < 400
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ValueError):
        return False


class Checker(threading.Thread):
    """Runs a TCP/HTTP check every ``interval`` seconds until stopped."""

    def __init__(self, check: Check, health: Health, interval: float, timeout: float):
        super().__init__(name="dcnet-init-check", daemon=True)
        self.check, self.health = check, health
        self.interval, self.timeout = interval, timeout
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            self.health.record(probe(self.check, self.timeout))
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - started)))


def serve(health: Health, address: str, port: int):
    """Start the health endpoint (a ThreadingHTTPServer) in a daemon thread."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/debug"):
                body, code = health.last_output.encode(), 200
            elif self.path.startswith("/health") or self.path == "/":
                ok = health.serving()
                body = (b"ok\n" if ok else f"{health.phase}\n".encode())
                code = 200 if ok else 503
            else:
                body, code = b"not found\n", 404
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            return None

    server = http.server.ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="dcnet-init-health",
                     daemon=True).start()
    return server
