"""Running one sample: the client command in the client namespace, CPU counters around it.

It picks the runner for the test's kind (iperf3 for tcp/udp, sockperf for latency,
qperf for rr, the connection-rate programs for connrate), starts the client (bounded by
the runner's timeout), reads /proc/stat and the load average before and after, parses the output
with the runner's pure parser and derives the CPU cost: busy and softirq CPU seconds per
GB moved (whole machine, both ends, from /proc/stat) and iperf3's own per-process CPU
seconds per GB. A tool error becomes a failed sample carrying the tool's message; an
iperf3 "server is busy" (left over from a killed client) is retried once.
"""

from __future__ import annotations

import gzip
import os
import time
from types import ModuleType

from dcnet.netbench import connrate, cpustat, iperf3, qperf, sockperf
from dcnet.netbench.definition import TestSpec
from dcnet.netbench.live import LiveMode
from dcnet.netbench.results import Sample
from dcnet.netbench.schedule import Item
from dcnet.netbench.tools import Measurement, ToolFailed
from dcnet.sysio import proc

RUNNERS: dict[str, ModuleType] = {"tcp": iperf3, "udp": iperf3, "latency": sockperf,
                                  "rr": qperf, "connrate": connrate}
BUSY_RETRY_DELAY = 1.0


def port_key(test: TestSpec) -> str:
    if test.kind in ("tcp", "udp"):
        return "iperf3"
    if test.kind == "latency":
        return f"sockperf-{test.protocol}"
    if test.kind == "rr":
        return "qperf"   # one server for both protocols; its data port is "qperf-data"
    return "connrate"


def server_argv(key: str, live: LiveMode) -> tuple[list[str], str]:
    """The server command for port key ``key`` and the protocol to wait for."""
    port = live.ports[key]
    if key == "iperf3":
        return iperf3.server_argv(live.bind_address, port), "tcp"
    if key.startswith("sockperf-"):
        protocol = key.removeprefix("sockperf-")
        return sockperf.server_argv(live.bind_address, protocol, port), protocol
    if key == "qperf":
        return qperf.server_argv(port), "tcp"
    return connrate.server_argv(live.bind_address, port), "tcp"


def client_argv(test: TestSpec, live: LiveMode, full_log: str | None) -> list[str]:
    port = live.ports[port_key(test)]
    if test.kind in ("tcp", "udp"):
        return iperf3.client_argv(test, live.target, port)
    if test.kind == "latency":
        return sockperf.client_argv(test, live.target, port, full_log)
    if test.kind == "rr":
        return qperf.client_argv(test, live.target, port, live.ports["qperf-data"])
    return connrate.client_argv(test, live.target, port)


def derive_cpu(test: TestSpec, measurement: Measurement, cpu: dict) -> dict[str, float]:
    """CPU metrics of a sample: busy share, and per-GB costs for throughput tests."""
    metrics = measurement.metrics
    derived = {"cpu_busy_s": float(cpu["busy_s"]), "softirq_s": float(cpu["softirq_s"])}
    if test.kind != "tcp":
        return derived
    run_gb = metrics.get("run_bytes", 0.0) / 1e9
    gb = metrics.get("bytes", 0.0) / 1e9
    if run_gb > 0:
        derived["cpu_s_per_gb"] = cpu["busy_s"] / run_gb
        derived["softirq_s_per_gb"] = cpu["softirq_s"] / run_gb
    if gb > 0:
        process_s = (metrics.get("client_cpu_pct", 0.0) + metrics.get("server_cpu_pct", 0.0)) \
            / 100.0 * metrics.get("seconds", 0.0)
        derived["proc_cpu_s_per_gb"] = process_s / gb
    return derived


def run(item: Item, test: TestSpec, live: LiveMode, raw_dir: str) -> Sample:
    full_log = None
    if test.kind == "latency" and test.keep_raw:
        os.makedirs(raw_dir, exist_ok=True)
        family = "" if item.family == "ipv4" else f"-{item.family}"
        full_log = os.path.join(raw_dir,
                                f".{live.name}{family}-{test.name}-r{item.round}.csv")
    sample = _attempt(item, test, live, full_log)
    if (not sample.ok and test.kind in ("tcp", "udp") and sample.error
            and "busy" in sample.error):
        time.sleep(BUSY_RETRY_DELAY)
        sample = _attempt(item, test, live, full_log)
        sample.details["retried_busy_server"] = True
    if full_log:
        _keep_raw(sample, full_log)
    return sample


def _attempt(item: Item, test: TestSpec, live: LiveMode, full_log: str | None) -> Sample:
    runner = RUNNERS[test.kind]
    argv = client_argv(test, live, full_log)
    load = cpustat.read_loadavg()
    started, clock = time.time(), time.monotonic()
    before = cpustat.read()
    sample = Sample(mode=item.mode, test=item.test, kind=test.kind, round=item.round,
                    warmup=item.warmup, order=item.order, started=started, wall_s=0.0,
                    ok=False, load_average=load, family=item.family)
    try:
        done = proc.run(argv, netns=live.client_ns, check=False,
                        timeout=runner.client_timeout(test))
    except proc.CommandError as exc:
        sample.wall_s = time.monotonic() - clock
        sample.error = str(exc)
        return sample
    after = cpustat.read()
    sample.wall_s = time.monotonic() - clock
    cpu = cpustat.summary(cpustat.delta(before, after, cpustat.ticks_per_second()))
    sample.cpu = cpu
    try:
        measurement = runner.parse(done.stdout, done.stderr, done.returncode)
    except ToolFailed as exc:
        sample.error = str(exc)
        return sample
    sample.ok = True
    sample.metrics = {**measurement.metrics, **derive_cpu(test, measurement, cpu)}
    sample.details = dict(measurement.details)
    return sample


def _keep_raw(sample: Sample, full_log: str) -> None:
    """Compress the per-message latencies beside the results; drop the CSV."""
    try:
        with open(full_log) as handle:
            latencies = sockperf.parse_full_log(handle.read())
        target = full_log.replace("/.", "/").removesuffix(".csv") + ".txt.gz"
        with gzip.open(target, "wt") as out:
            out.write("".join(f"{value:.3f}\n" for value in latencies))
        sample.details["raw_latencies"] = os.path.basename(target)
    except (OSError, ToolFailed) as exc:
        sample.details["raw_latencies_error"] = str(exc)
    finally:
        if os.path.exists(full_log):
            os.unlink(full_log)
