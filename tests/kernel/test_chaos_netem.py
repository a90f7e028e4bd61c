"""netem delay faults on the real qdisc, in the kernel lab (this host has no sch_netem):
an injected delay measured back with ping (p50 within a generous bound of the request:
this checks the tree built, not emulated speed; figures in bench/chaos_delay.py), and a
delay stacked with a rate limit and loss: one tree (tbf root, netem child with the
combined loss), revert of the rate leaves the delay (netem back at the root, still
measured), a normal distribution goes through iproute2's tc, and the last revert leaves
no chaos qdisc. Both tests share one namespace pair made with iproute2 (pyroute2's
netns creation forks a helper too slow for emulation)."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import tempfile

import pytest

from dcnet.chaos import faults, qdisc
from dcnet.chaos.experiment import Step

# pyroute2 sockets leak to the garbage collector in the guest (see tests/kernel/test_lvs.py)
pytestmark = [pytest.mark.kernel("sch_netem"),
              pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

ADDR_B = "10.253.1.2"
_TIME = re.compile(r"time=([\d.]+) ms")


@pytest.fixture(scope="module")
def pair():
    os.environ[qdisc.ENV_DIR] = tempfile.mkdtemp(prefix="netem-stack-")
    a, b = f"netem-a-{os.getpid()}", f"netem-b-{os.getpid()}"
    for name in (a, b):
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "link", "add", "nt0", "netns", a, "type", "veth", "peer", "name",
                    "nt0", "netns", b], check=True)
    for name, addr in ((a, "10.253.1.1"), (b, ADDR_B)):
        subprocess.run(["ip", "-n", name, "addr", "add", f"{addr}/24", "dev", "nt0"],
                       check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "nt0", "up"], check=True)
    yield a
    for name in (a, b):
        subprocess.run(["ip", "netns", "del", name], check=False)


def rtt_p50(ns: str, samples: int = 20) -> float:
    out = subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-c", str(samples), "-i",
                          "0.05", "-W", "5", ADDR_B], capture_output=True, text=True).stdout
    times = [float(t) for t in _TIME.findall(out)]
    assert len(times) >= samples // 2, out
    return statistics.median(times)


def tc(ns: str) -> str:
    return subprocess.run(["tc", "-n", ns, "qdisc", "show", "dev", "nt0"], check=True,
                          capture_output=True, text=True).stdout


def fault(ns: str, kind: str, index: int, **values) -> dict:
    return faults.prepare(Step(kind, 1, ns, interface="nt0", **values), "k", index)


def test_injected_delay_is_measured_back(pair):
    base = rtt_p50(pair)
    for delay in (50, 300):
        record = fault(pair, "delay", 0, delay_ms=delay)
        faults.apply(record)
        try:
            measured = rtt_p50(pair) - base
        finally:
            faults.revert(record)
        print(f"figures: requested {delay} ms, measured p50 {measured:.2f} ms")
        # generous: emulated timers are late, never early by more than rounding
        assert delay * 0.95 <= measured <= delay * 1.5 + 20, (delay, measured)
    assert "netem" not in tc(pair)


def test_stacked_delay_rate_and_loss_are_one_tree_and_revert_separately(pair):
    delay = fault(pair, "delay", 0, delay_ms=100, loss=10.0)
    more = fault(pair, "delay", 1, delay_ms=0, loss=10.0)
    rate = fault(pair, "rate", 2, rate_bps=10_000_000)
    for record in (delay, more, rate):
        faults.apply(record)
    try:
        assert qdisc.tree(pair, "nt0") == [("tbf", "1:0", "root"), ("netem", "10:0", "1:1")]
        shown = tc(pair)
        assert "rate 10Mbit" in shown and "delay 100ms" in shown
        assert re.search(r"loss 19(\.0+)?%", shown), shown     # 1 - 0.9 * 0.9
        faults.revert(rate)                                  # the delay stays, at the root
        assert qdisc.tree(pair, "nt0") == [("netem", "10:0", "root")]
        assert rtt_p50(pair) >= 95
        faults.revert(more)
        assert re.search(r"delay 100ms loss 10(\.0+)?%", tc(pair)), tc(pair)   # its own
        normal = fault(pair, "delay", 3, delay_ms=20, jitter_ms=5, distribution="normal")
        faults.apply(normal)                                 # through iproute2's tc
        assert re.search(r"delay 120ms\s+5ms", tc(pair)), tc(pair)
        faults.revert(normal)
    finally:
        for record in (rate, more, delay):
            faults.revert(record)
    assert "netem" not in tc(pair) and "tbf" not in tc(pair)
    assert qdisc.read_stack(pair, "nt0") == []
