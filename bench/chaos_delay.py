"""Benchmark: is an injected netem delay what was asked? Requested vs measured delay.

    .venv/bin/python bench/chaos_delay.py [--method ping|timestamps|ping,timestamps]
        [--samples 60] [--ts-samples 500] [--interval 0.01] [--busy N]
        [--cases 50/0,50/10,300/0,300/30]

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

``--method timestamps`` measures the delay the qdisc tree applies with the kernel's own
packet timestamps instead of userspace RTTs (whose p99 under emulation is the guest's
scheduling and timers): a sequence-numbered UDP stream from A to B on a socket with
SO_TIMESTAMPING SOF_TIMESTAMPING_TX_SCHED (stamped in ``__dev_queue_xmit`` before the
packet enters the root qdisc) and TX_SOFTWARE (stamped in ``veth_xmit`` when the qdisc
tree has released it), both read back from the socket's error queue with their
``OPT_ID``; the qdisc's delay of packet i is SND - SCHED, both kernel CLOCK_REALTIME
stamps of one kernel, so no userspace wake-up enters it. B's socket has SO_TIMESTAMPNS
(stamped in ``netif_rx`` in B) as a cross-check: one-way = RX - SCHED. Requested
quantiles: netem without a distribution table (pyroute2 sends none; uniform here) draws
uniformly from [delay - jitter, delay + jitter), so the requested p50 is the delay and
the requested p99 is delay + 0.98 x jitter. ``--busy N`` runs N busy-looping processes
beside the measurement (userspace contention, to see which method it moves).
"""

from __future__ import annotations

import argparse
import os
import re
import select
import socket
import statistics
import struct
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


# kernel timestamping (linux/net_tstamp.h, asm-generic/socket.h, linux/errqueue.h)
SO_TIMESTAMPNS = SCM_TIMESTAMPNS = 35
SO_TIMESTAMPING = SCM_TIMESTAMPING = 37
TS_FLAGS = (1 << 1) | (1 << 4) | (1 << 7) | (1 << 8) | (1 << 11)  # TX_SOFTWARE SOFTWARE
TSTAMP_SND, TSTAMP_SCHED = 0, 1                                     # OPT_ID TX_SCHED TSONLY
IP_RECVERR = 11
PORT = 9
_EXTERR = struct.Struct("=IBBBBII")   # sock_extended_err: errno origin type code pad info data


def _ns(data: bytes, offset: int = 0) -> int:
    sec, nsec = struct.unpack_from("=qq", data, offset)
    return sec * 1_000_000_000 + nsec


def _sockets() -> tuple[socket.socket, socket.socket]:
    from dcnet.sysio import netns

    def make(name: str) -> socket.socket:
        raw = netns.socket_in(netns.path_of(name), socket.AF_INET, socket.SOCK_DGRAM)
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM, fileno=raw.detach())

    tx, rx = make(A), make(B)
    rx.bind((ADDR_B, PORT))
    rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    tx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, TS_FLAGS)
    tx.connect((ADDR_B, PORT))
    for sock in (tx, rx):
        sock.setblocking(False)
    return tx, rx


def _drain(tx: socket.socket, rx: socket.socket, stamps: dict, base_id: int) -> None:
    while True:                                          # TX stamps: SCHED and SND
        try:
            _, anc, _, _ = tx.recvmsg(64, 512, socket.MSG_ERRQUEUE)
        except BlockingIOError:
            break
        when, kind, ident = None, None, None
        for level, ctype, data in anc:
            if level == socket.SOL_SOCKET and ctype == SCM_TIMESTAMPING:
                when = _ns(data)                         # ts[0]: the software stamp
            elif level == socket.IPPROTO_IP and ctype == IP_RECVERR:
                _, _, _, _, _, kind, ident = _EXTERR.unpack_from(data)
        if when is not None and kind in (TSTAMP_SND, TSTAMP_SCHED):
            stamps.setdefault(ident - base_id, {})["snd" if kind == TSTAMP_SND
                                                   else "sched"] = when
    while True:                                          # RX stamps in B
        try:
            payload, anc, _, _ = rx.recvmsg(64, 256)
        except BlockingIOError:
            break
        for level, ctype, data in anc:
            if level == socket.SOL_SOCKET and ctype == SCM_TIMESTAMPNS and len(payload) >= 4:
                stamps.setdefault(struct.unpack_from("!I", payload)[0], {})["rx"] = _ns(data)


class Stream:
    """A UDP stream A -> B whose per-packet delays come from kernel timestamps."""

    def __init__(self) -> None:
        self.tx, self.rx = _sockets()
        self.sent = 0                                    # OPT_ID counts every send

    def close(self) -> None:
        self.tx.close()
        self.rx.close()

    def delays(self, samples: int, interval: float, wait: float) -> tuple[list, list]:
        """(qdisc delays SND - SCHED, one-way delays RX - SCHED) in ms, per packet."""
        stamps: dict[int, dict] = {}
        base_id, poller = self.sent, select.poll()
        poller.register(self.tx, select.POLLERR)
        poller.register(self.rx, select.POLLIN)
        next_send = time.monotonic()
        for seq in range(samples):
            self.tx.send(struct.pack("!I", seq) + bytes(28))
            self.sent += 1
            next_send += interval
            while (left := next_send - time.monotonic()) > 0:
                if poller.poll(left * 1000):
                    _drain(self.tx, self.rx, stamps, base_id)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not all(
                len(stamps.get(i, {})) == 3 for i in range(samples)):
            if poller.poll(100):
                _drain(self.tx, self.rx, stamps, base_id)
        qdisc = [(s["snd"] - s["sched"]) / 1e6 for s in stamps.values() if "snd" in s
                 and "sched" in s]
        oneway = [(s["rx"] - s["sched"]) / 1e6 for s in stamps.values() if "rx" in s
                  and "sched" in s]
        return qdisc, oneway


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def case(delay: float, jitter: float, sample, rate: str = "") -> dict:
    """Apply the fault(s), take ``sample()`` (a dict of per-packet lists), revert."""
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
    measured = sample(delay)
    start = time.monotonic()
    for record in reversed(records):
        faults.revert(record)
    reverted = time.monotonic() - start
    return {"delay": delay, "jitter": jitter, "rate": rate or "-", "inject": injected,
            "revert": reverted, **measured}


def err(value: float, want: float) -> str:
    return f"{(value - want) / want * 100:+.1f}%" if want else "-"


def measure_ping(samples: int, cases: list[tuple[float, float]]) -> None:
    rtts(5)                                              # ARP, first-packet costs
    base_samples = rtts(samples)
    base = statistics.median(base_samples)
    print(f"[ping] base RTT without a fault: p50 {base:.3f} ms, p99 "
          f"{pct(base_samples, 99):.3f} ms ({len(base_samples)} pings)")

    def sample(_delay: float) -> dict:
        return {"values": [r - base for r in rtts(samples)]}

    rows = [case(d, j, sample) for d, j in cases]
    rows.append(case(50, 0, sample, rate="10mbit"))
    print("| delay ms | jitter ms | stacked rate | pings | p50 ms | p99 ms | p50 error "
          "| inject s | revert s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        v = r["values"]
        print(f"| {r['delay']:g} | {r['jitter']:g} | {r['rate']} | {len(v)} | "
              f"{pct(v, 50):.2f} | {pct(v, 99):.2f} | {err(pct(v, 50), r['delay'])} | "
              f"{r['inject']:.3f} | {r['revert']:.3f} |")
    print("load average (1/5/15 min): " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


def measure_timestamps(samples: int, interval: float, cases: list[tuple[float, float]]) -> None:
    stream = Stream()
    try:
        stream.delays(5, 0.05, 2.0)                      # ARP, first-packet costs
        base_q, base_o = stream.delays(samples, interval, 5.0)
        print(f"[timestamps] base without a fault ({len(base_q)} packets, {interval * 1000:g}"
              f" ms apart): qdisc SND-SCHED p50 {pct(base_q, 50):.4f} ms p99 "
              f"{pct(base_q, 99):.4f} ms; one-way RX-SCHED p50 {pct(base_o, 50):.4f} ms "
              f"p99 {pct(base_o, 99):.4f} ms")

        def sample(delay: float) -> dict:
            qdisc, oneway = stream.delays(samples, interval, delay / 1000 * 3 + 5.0)
            return {"values": qdisc, "oneway": oneway}

        rows = [case(d, j, sample) for d, j in cases]
        rows.append(case(50, 0, sample, rate="10mbit"))
    finally:
        stream.close()
    print("| delay ms | jitter ms | stacked rate | packets | asked p50 / p99 ms | p50 ms | "
          "p99 ms | p50 error | p99 error | min / max ms | one-way p50 / p99 ms | inject s "
          "| revert s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        v, o = r["values"], r["oneway"]
        want99 = r["delay"] + 0.98 * r["jitter"]         # uniform on [d - j, d + j)
        print(f"| {r['delay']:g} | {r['jitter']:g} | {r['rate']} | {len(v)} | "
              f"{r['delay']:g} / {want99:g} | {pct(v, 50):.3f} | {pct(v, 99):.3f} | "
              f"{err(pct(v, 50), r['delay'])} | {err(pct(v, 99), want99)} | "
              f"{min(v):.3f} / {max(v):.3f} | {pct(o, 50):.3f} / {pct(o, 99):.3f} | "
              f"{r['inject']:.3f} | {r['revert']:.3f} |")
    print("load average (1/5/15 min): " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


def measure(methods: list[str], samples: int, ts_samples: int, interval: float,
            cases: list[tuple[float, float]], busy: int = 0) -> None:
    os.environ.setdefault("DCNET_CHAOS_QDISC_DIR", tempfile.mkdtemp(prefix="cdelay-"))
    setup()
    # --busy N: N spinning processes compete with the measuring userspace for the CPUs
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(busy)]
    try:
        if busy:
            print(f"{busy} busy-looping processes running during the measurement")
        print(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()) + ", kernel "
              + os.uname().release + ", load average (1/5/15 min): "
              + " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
        for method in methods:
            if method == "ping":
                measure_ping(samples, cases)
            else:
                measure_timestamps(ts_samples, interval, cases)
            sys.stdout.flush()
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
        teardown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="ping",
                        help="ping, timestamps, or both comma-separated (one boot)")
    parser.add_argument("--samples", type=int, default=60, help="pings per case")
    parser.add_argument("--ts-samples", type=int, default=500,
                        help="packets per case of the timestamps method")
    parser.add_argument("--interval", type=float, default=0.01,
                        help="seconds between packets of the timestamps method")
    parser.add_argument("--cases", default="50/0,50/10,300/0,300/30")
    parser.add_argument("--busy", type=int, default=0,
                        help="busy-looping processes to run beside the measurement")
    parser.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cases = [tuple(float(x) for x in c.split("/")) for c in args.cases.split(",")]
    methods = args.method.split(",")
    if not set(methods) <= {"ping", "timestamps"}:
        parser.error(f"unknown --method {args.method!r}")
    from dcnet.lab import kernel_lab

    if args.in_guest or kernel_lab.host_has_modules(["sch_netem"]):
        measure(methods, args.samples, args.ts_samples, args.interval, cases, args.busy)
        return
    out = tempfile.mkdtemp(prefix="chaos-delay-bench-")
    argv = [sys.executable, os.path.abspath(__file__), "--in-guest", "--method", args.method,
            "--samples", str(args.samples), "--ts-samples", str(args.ts_samples),
            "--interval", str(args.interval), "--cases", args.cases, "--busy", str(args.busy)]
    print(f"host kernel has no netem: running in the kernel lab (log {out}/guest-console.log)",
          flush=True)
    run = kernel_lab.run_in_guest(argv, rwdirs=[out], memory="2G", timeout=1800,
                                  env={"PYTHONUNBUFFERED": "1", "HOME": "/root",
                                       "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                                  cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(run.log_tail(60))
    print(f"guest run: {run.seconds:.0f}s wall, exit {run.returncode}; host load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    sys.exit(0 if run.ok else 1)


if __name__ == "__main__":
    main()
