"""Steady-state probes run from inside a namespace, each request recorded with its time.

A probe runs ``concurrency`` threads inside the probe's namespace (through
:func:`dcnet.sysio.netns.start_thread_in`), each doing one request at a time and
recording (monotonic start time, ok) until stopped. Kinds: :class:`HTTPProbe` (a GET on
a new connection; ok = status below 400 within the timeout), :class:`RouteProbe` (ok =
the prefix is a unicast route in the namespace's main table, read by rtnetlink: no
timeout) and :class:`CniAddProbe` (a CNI ADD of a conflist into a pod namespace of its
own, ok = it succeeded within the timeout; then a DEL, also after a failed ADD, as
container runtimes do; what a failed ADD left before its DEL is counted in
``dirty_failures``, what the DEL could not remove shows in the run's left-over check)
and :class:`DnsProbe` (``dig`` from the namespace, so the name server picks the view by
the namespace's source address; ok = the answer's addresses are exactly the expected
ones: a withdrawn carrier answer or a wrong view fails) and :class:`TcpProbe` (a TCP
connect to ``host:port``; ok = connected within the timeout; its latency is one round
trip: what a delay fault adds is measured back with it).
Each record is (monotonic start, ok, seconds the request took).
:func:`make` builds the one a probe names; :func:`window` summarises the records of a
time range (with the p50/p99 latency of its successful requests).
"""

from __future__ import annotations

import http.client
import ipaddress
import itertools
import json
import os
import socket
import statistics
import subprocess
import threading
import time
import urllib.parse

from dcnet.chaos.experiment import Probe
from dcnet.cni import rtnl
from dcnet.sysio import netns


class ProbeRunner:
    """The threads and records of one probe; subclasses say what one request is."""

    def __init__(self, probe: Probe):
        self.probe = probe
        self.records: list[tuple[float, bool, float]] = []
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
            took = time.monotonic() - started
            self.records.append((started, ok, took))      # list.append is atomic
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
    """The namespace's main table read by rtnetlink from the probe's thread (in the
    namespace): no program started, no timeout. A busy machine delays the answer, not
    its truth: ``ip route show`` under the probe's 1 s timeout failed a request of the
    etcd-member-killed run at load 11 while the route stayed (the probe's thread got no
    CPU for ~1.4 s). ``last_error``: why the last failed request failed."""

    def __init__(self, probe: Probe):
        super().__init__(probe)
        net = ipaddress.ip_network(probe.route, strict=False)
        self.family = rtnl.AF_INET6 if net.version == 6 else rtnl.AF_INET
        self.dst, self.plen = net.network_address.packed, net.prefixlen
        self.last_error: str | None = None

    def one(self) -> bool:
        try:
            with rtnl.Netlink() as link:
                routes = link.routes(family=self.family)
        except OSError as exc:
            self.last_error = f"reading the routes: {exc}"
            return False
        if any(r["dst"] == self.dst and r["plen"] == self.plen for r in routes):
            return True
        self.last_error = f"no unicast route {self.probe.route} in the main table"
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
        self.slow_adds: list[str] = []       # ADDs that succeeded after the timeout
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
            took = time.monotonic() - started
            ok = took <= self.probe.timeout
            if not ok:                 # failed, though not refused: say so
                self.slow_adds.append(f"{name}: {took:.2f} s")
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


class TcpProbe(ProbeRunner):
    """A TCP connect (the handshake only: one round trip, no application in the way)."""

    def __init__(self, probe: Probe):
        super().__init__(probe)
        host, _, port = probe.url.rpartition(":")
        self.address = (host, int(port))

    def one(self) -> bool:
        try:
            with socket.create_connection(self.address, self.probe.timeout):
                return True
        except OSError:
            return False


KINDS = {"http": HTTPProbe, "route": RouteProbe, "cni-add": CniAddProbe, "dns": DnsProbe,
         "tcp": TcpProbe}


def make(probe: Probe) -> ProbeRunner:
    return KINDS[probe.kind](probe)


def window(records: list[tuple], start: float, end: float) -> dict:
    """Requests started in [start, end): counts, success ratio, first/last failure offsets
    from ``start`` (seconds); with records that carry durations (a probe's), also
    ``latency_p50_ms``/``latency_p99_ms`` of the successful ones (None: none)."""
    inside = [r for r in records if start <= r[0] < end]
    failed = sorted(r[0] for r in inside if not r[1])
    total = len(inside)
    out = {"requests": total, "failed": len(failed),
           "success": round((total - len(failed)) / total, 4) if total else None,
           "first_failure": round(failed[0] - start, 3) if failed else None,
           "last_failure": round(failed[-1] - start, 3) if failed else None}
    if records and len(records[0]) > 2:
        took = [r[2] * 1000 for r in inside if r[1]]
        out["latency_p50_ms"] = round(statistics.median(took), 3) if took else None
        out["latency_p99_ms"] = round(percentile(took, 99), 3) if took else None
    return out


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile, linear between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def buckets(records: list[tuple], t0: float, end: float,
            width: float = 0.1) -> list[list[int]]:
    """[ok, failed] per ``width`` seconds from ``t0`` to ``end`` (the timeline)."""
    out = [[0, 0] for _ in range(max(1, int((end - t0) / width) + 1))]
    for t, ok, *_ in records:
        if t0 <= t <= end:
            out[int((t - t0) / width)][0 if ok else 1] += 1
    return out


def recovered_at(records: list[tuple], start: float, end: float) -> float | None:
    """Seconds from ``start`` to the first successful request after the last failure in
    [start, end) (0 when none failed; None when none succeeded after the last failure)."""
    inside = sorted((t, ok) for t, ok, *_ in records if start <= t < end)
    last_failure = max((t for t, ok in inside if not ok), default=None)
    if last_failure is None:
        return 0.0
    after = [t for t, ok in inside if ok and t > last_failure]
    return round(after[0] - start, 3) if after else None
