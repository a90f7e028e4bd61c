"""Steady-state probes: HTTP requests through a VIP from inside a namespace, recorded.

A :class:`HTTPProbe` runs ``concurrency`` threads inside the probe's namespace (through
:func:`dcnet.sysio.netns.start_thread_in`), each doing one GET on a new connection at a
time and recording (monotonic start time, ok) until stopped; ok = an answer with status
below 400 within the timeout. :func:`window` summarises the records of a time range.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse

from dcnet.chaos.experiment import Probe
from dcnet.sysio import netns


class HTTPProbe:
    def __init__(self, probe: Probe):
        self.probe = probe
        url = urllib.parse.urlsplit(probe.url)
        self.host, self.port = url.hostname, url.port or 80
        self.path = url.path or "/"
        self.records: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def one(self) -> bool:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.probe.timeout)
        try:
            conn.request("GET", self.path)
            response = conn.getresponse()
            response.read()
            return response.status < 400
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            ok = self.one()
            self.records.append((started, ok))      # list.append is atomic
            if self.probe.interval:
                self._stop.wait(self.probe.interval)

    def start(self) -> None:
        path = netns.path_of(self.probe.namespace)
        for i in range(self.probe.concurrency):
            self._threads.append(netns.start_thread_in(path, self._loop,
                                                       name=f"probe-{self.probe.name}-{i}"))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.probe.timeout + 5)


def window(records: list[tuple[float, bool]], start: float, end: float) -> dict:
    """Requests started in [start, end): counts, success ratio, first/last failure offsets
    from ``start`` (seconds)."""
    inside = [(t, ok) for t, ok in records if start <= t < end]
    failed = sorted(t for t, ok in inside if not ok)
    total = len(inside)
    return {"requests": total, "failed": len(failed),
            "success": round((total - len(failed)) / total, 4) if total else None,
            "first_failure": round(failed[0] - start, 3) if failed else None,
            "last_failure": round(failed[-1] - start, 3) if failed else None}
