"""Steady-state probes run from inside a namespace, each request recorded with its time.

A probe runs ``concurrency`` threads inside the probe's namespace (through
:func:`dcnet.sysio.netns.start_thread_in`), each doing one request at a time and recording
(monotonic start time, ok) until stopped. Kinds: :class:`HTTPProbe` (a GET on a new
connection; ok = status below 400 within the timeout), :class:`RouteProbe` (ok = the
prefix is a route in the namespace's main table) and :class:`CniAddProbe` (a CNI ADD of a
conflist into a pod namespace of its own, ok = it succeeded within the timeout; then a
DEL, also after a failed ADD, as container runtimes do; what a failed ADD left before
its DEL is counted in ``dirty_failures``, what the DEL could not remove shows in the
run's left-over check) and :class:`DnsProbe` (``dig`` from the namespace, so the name
server picks the view by the namespace's source address; ok = the answer's addresses are
exactly the expected ones: a withdrawn carrier answer or a wrong view fails).
:func:`make` builds the one a probe names; :func:`window` summarises the records of a time range.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import subprocess
import threading
import time
import urllib.parse

from dcnet.chaos.experiment import Probe
from dcnet.sysio import netns


class ProbeRunner:
    """The threads and records of one probe; subclasses say what one request is."""

    def __init__(self, probe: Probe):
        self.probe = probe
        self.records: list[tuple[float, bool]] = []
        self.leftovers: list[str] = []       # what the probe itself could not clean up
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._in_flight: dict[int, float] = {}     # thread ident -> its request's start

    def one(self) -> bool:
        raise NotImplementedError

    def in_flight_since(self, moment: float) -> bool:
        """True while a request started before ``moment`` has not been recorded."""
        return any(t < moment for t in list(self._in_flight.values()))

    def _loop(self) -> None:
        me = threading.get_ident()
        while not self._stop.is_set():
            started = self._in_flight[me] = time.monotonic()
            ok = self.one()
            self.records.append((started, ok))      # list.append is atomic
            del self._in_flight[me]
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


class HTTPProbe(ProbeRunner):
    def __init__(self, probe: Probe):
        super().__init__(probe)
        url = urllib.parse.urlsplit(probe.url)
        self.host, self.port = url.hostname, url.port or 80
        self.path = url.path or "/"

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


class RouteProbe(ProbeRunner):
    def one(self) -> bool:
        try:
            out = subprocess.run(["ip", "-j", "route", "show", "exact", self.probe.route],
                                 capture_output=True, text=True, timeout=self.probe.timeout)
            return out.returncode == 0 and bool(json.loads(out.stdout or "[]"))
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return False


class CniAddProbe(ProbeRunner):
    """ADD into a fresh pod namespace (``chaos<pid>-<n>``), DEL and remove it after."""

    _numbers = itertools.count()

    def __init__(self, probe: Probe):
        super().__init__(probe)
        from dcnet.cni.invoke import CniRuntime

        with open(probe.conflist, encoding="utf-8") as handle:
            conflist = json.load(handle)
        # node_netns None: the probe's threads already run in the node's namespace
        self.runtime = CniRuntime(conflist, probe.cni_path.split(":"))
        self.added = 0
        self.failed_adds: list[str] = []
        self.dirty_failures = 0     # failed ADDs that left an interface in the pod

    def _pod_links(self, name: str) -> int:
        out = subprocess.run(["ip", "-n", name, "-o", "link", "show"], capture_output=True,
                             text=True)
        return sum(1 for line in out.stdout.splitlines() if ": lo:" not in line)

    def args(self, name: str) -> str:
        return self.probe.cni_args.replace("{pod}", name)

    def one(self) -> bool:
        from dcnet.cni.invoke import PluginError

        name = f"chaos{os.getpid()}-{next(self._numbers)}"
        if subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode:
            return False
        ok = False
        started = time.monotonic()
        try:
            self.runtime.add(name, netns.path_of(name), args=self.args(name))
            ok = time.monotonic() - started <= self.probe.timeout
            self.added += 1
        except (PluginError, OSError, ValueError) as exc:
            self.failed_adds.append(f"{name}: {str(exc)[:300]}")
            self.dirty_failures += bool(self._pod_links(name))
        try:
            self.runtime.delete(name, netns.path_of(name), args=self.args(name))
        except (PluginError, OSError, ValueError) as exc:
            self.leftovers.append(f"probe {self.probe.name}: DEL of {name}: {exc}")
        finally:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        return ok


class DnsProbe(ProbeRunner):
    """One query with ``dig`` (BIND's client, run in the probe's namespace)."""

    def __init__(self, probe: Probe):
        super().__init__(probe)
        self.expect = sorted(probe.expect)
        self.argv = ["dig", "+short", f"+time={max(1, round(probe.timeout))}", "+tries=1",
                     f"@{probe.server}", probe.qname, probe.qtype]
        self.last_wrong: list[str] | None = None     # the last answer that was not right

    def one(self) -> bool:
        try:
            out = subprocess.run(self.argv, capture_output=True, text=True,
                                 timeout=self.probe.timeout + 2)
        except (OSError, subprocess.TimeoutExpired):
            return False
        answer = sorted(line for line in out.stdout.split() if not line.endswith("."))
        if out.returncode == 0 and answer == self.expect:
            return True
        self.last_wrong = answer if out.returncode == 0 else [f"dig exit {out.returncode}"]
        return False


KINDS = {"http": HTTPProbe, "route": RouteProbe, "cni-add": CniAddProbe, "dns": DnsProbe}


def make(probe: Probe) -> ProbeRunner:
    return KINDS[probe.kind](probe)


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


def buckets(records: list[tuple[float, bool]], t0: float, end: float,
            width: float = 0.1) -> list[list[int]]:
    """[ok, failed] per ``width`` seconds from ``t0`` to ``end`` (the timeline)."""
    out = [[0, 0] for _ in range(max(1, int((end - t0) / width) + 1))]
    for t, ok in records:
        if t0 <= t <= end:
            out[int((t - t0) / width)][0 if ok else 1] += 1
    return out


def recovered_at(records: list[tuple[float, bool]], start: float, end: float) -> float | None:
    """Seconds from ``start`` to the first successful request after the last failure in
    [start, end) (0 when none failed; None when none succeeded after the last failure)."""
    inside = sorted((t, ok) for t, ok in records if start <= t < end)
    last_failure = max((t for t, ok in inside if not ok), default=None)
    if last_failure is None:
        return 0.0
    after = [t for t, ok in inside if ok and t > last_failure]
    return round(after[0] - start, 3) if after else None
