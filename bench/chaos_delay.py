"""Benchmark: is an injected netem delay what was asked? Requested vs measured RTT.

    .venv/bin/python bench/chaos_delay.py [--samples 60] [--cases 50/0,50/10,300/0,300/30]

Where the host kernel lacks netem (sch_netem) the script re-runs itself inside the kernel
lab (one virtme-ng boot, dcnet.lab.kernel_lab.run_in_guest) and prints the guest's
report. Two namespaces joined by a veth (made with iproute2); for each case DELAY/JITTER
(ms) a ``delay`` fault is applied to one end's veth through dcnet.chaos.faults (the same
prepare/apply/revert as ``elbctl chaos run``), ``ping`` measures RTT samples across it
(the delay is on one direction only, so RTT = delay + the link's base RTT, measured
first without a fault), then the fault is reverted. Printed per case: requested delay
and jitter, measured p50 and p99 of the RTT minus the base p50, their error against
the request, the time to inject (apply: the qdisc tree built) and to revert, and the
load average. A last case stacks a 10mbit rate on the 50 ms delay (tbf root, netem
child) to show stacking keeps the delay.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

A, B = "cdelay-a", "cdelay-b"
ADDR_A, ADDR_B = "10.253.0.1", "10.253.0.2"
_TIME = re.compile(r"time=([\d.]+) ms")


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


def setup() -> None:
    for name in (A, B):
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
    sh("ip", "link", "add", "cd0", "netns", A, "type", "veth", "peer", "name", "cd0",
       "netns", B)
    for name, addr in ((A, ADDR_A), (B, ADDR_B)):
        sh("ip", "-n", name, "addr", "add", f"{addr}/24", "dev", "cd0")
        sh("ip", "-n", name, "link", "set", "cd0", "up")


def teardown() -> None:
    for name in (A, B):
        subprocess.run(["ip", "netns", "del", name], check=False)


def rtts(samples: int, interval: float = 0.05) -> list[float]:
    """RTT samples in ms from A to B (ping, one echo every ``interval`` s)."""
    out = subprocess.run(["ip", "netns", "exec", A, "ping", "-n", "-c", str(samples), "-i",
                          str(interval), "-W", "5", ADDR_B], capture_output=True, text=True,
                         check=False).stdout
    return [float(m) for m in _TIME.findall(out)]


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def case(delay: float, jitter: float, samples: int, base: float, rate: str = "") -> dict:
    from dcnet.chaos import faults
    from dcnet.chaos.experiment import Step
    from dcnet.chaos.qdisc import parse_rate

    records = []
    if rate:
        records.append(faults.prepare(Step("rate", 1, A, interface="cd0",
                                           rate_bps=parse_rate(rate)), "bench", 0))
    records.append(faults.prepare(Step("delay", 1, A, interface="cd0", delay_ms=delay,
                                       jitter_ms=jitter), "bench", 1))
    start = time.monotonic()
    for record in records:
        faults.apply(record)
    injected = time.monotonic() - start
    measured = [r - base for r in rtts(samples)]
    start = time.monotonic()
    for record in reversed(records):
        faults.revert(record)
    reverted = time.monotonic() - start
    p50, p99 = pct(measured, 50), pct(measured, 99)
    return {"delay": delay, "jitter": jitter, "rate": rate or "-", "n": len(measured),
            "p50": p50, "p99": p99, "err50": (p50 - delay) / delay * 100 if delay else 0.0,
            "inject": injected, "revert": reverted}


def measure(samples: int, cases: list[tuple[float, float]]) -> None:
    os.environ.setdefault("DCNET_CHAOS_QDISC_DIR", tempfile.mkdtemp(prefix="cdelay-"))
    setup()
    try:
        rtts(5)                                              # ARP, first-packet costs
        base_samples = rtts(samples)
        base = statistics.median(base_samples)
        print(f"base RTT without a fault: p50 {base:.3f} ms, p99 "
              f"{pct(base_samples, 99):.3f} ms ({len(base_samples)} pings)")
        rows = [case(d, j, samples, base) for d, j in cases]
        rows.append(case(50, 0, samples, base, rate="10mbit"))
        print("| delay ms | jitter ms | stacked rate | pings | p50 ms | p99 ms | p50 error "
              "| inject s | revert s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['delay']:g} | {r['jitter']:g} | {r['rate']} | {r['n']} | "
                  f"{r['p50']:.2f} | {r['p99']:.2f} | {r['err50']:+.1f}% | "
                  f"{r['inject']:.3f} | {r['revert']:.3f} |")
        print("load average (1/5/15 min): " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    finally:
        teardown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--cases", default="50/0,50/10,300/0,300/30")
    parser.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cases = [tuple(float(x) for x in c.split("/")) for c in args.cases.split(",")]
    from dcnet.lab import kernel_lab

    if args.in_guest or kernel_lab.host_has_modules(["sch_netem"]):
        measure(args.samples, cases)
        return
    out = tempfile.mkdtemp(prefix="chaos-delay-bench-")
    argv = [sys.executable, os.path.abspath(__file__), "--in-guest", "--samples",
            str(args.samples), "--cases", args.cases]
    print(f"host kernel has no netem: running in the kernel lab (log {out}/guest-console.log)",
          flush=True)
    run = kernel_lab.run_in_guest(argv, rwdirs=[out], memory="2G", timeout=1800,
                                  env={"PYTHONUNBUFFERED": "1", "HOME": "/root",
                                       "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                                  cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(run.log_tail(40))
    print(f"guest run: {run.seconds:.0f}s wall, exit {run.returncode}; host load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    sys.exit(0 if run.ok else 1)


if __name__ == "__main__":
    main()
