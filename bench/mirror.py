"""Benchmark: traffic mirroring (issue #19), all in namespaces of one lab run.

Topology: client -- director (router) -- server (the production logserver); the
director's nft ``dup`` copies client->server packets into a mirror namespace where the
recorder runs; a target namespace and one namespace per replay copy on a bridge.

1. Production latency and CPU with and without mirroring: rounds alternate (off, on,
   off, on, ...: ABAB; with ``--modes off,dup,on`` a third mode whose copies go to a
   namespace without a recorder, the kernel's cost alone) so all see the same load; each
   round runs ``--threads`` clients (closed loop, or paced at ``--rate`` requests/s in
   all) doing ``--sessions`` keep-alive sessions of ``--requests`` requests each. Per
   round: per-request latency p50/p99, requests/s, the 1-minute load average at its
   start, and CPU per request: the production processes' (the client threads of this
   process from ``getrusage``, the server from ``/proc/PID/stat``; with tick accounting
   the softirq work done in their context, the director's forwarding and ``dup``
   included, is charged to them), the machine's softirq ticks (``/proc/stat``, every
   CPU, other work included) and the recorder's (the mirror's consumer, off the
   production path). Per mode: the medians over its rounds, their ratios to "off"'s,
   the pooled p50/p99 of all its requests; per cycle its round against the cycle's "off"
   round: the ratios' median (with a 95% confidence interval), min and max.
2. Capture: sessions and requests the recorder wrote against what the production
   server logged during the mirrored rounds; kernel drops of the recorder's socket.
3. Replay of that recording at each of ``--factors`` (default x1, x10, x100), each
   ``--repeat`` times, the copies' namespaces made by :class:`dcnet.mirror.pool.SourcePool`
   on the lab bridge (one namespace and source address per copy): requests delivered per
   copy (against the recording), duplicates, order violations within a session, failed
   sessions, and whether every copy came from its own address; medians over repeats.

With ``--client sockperf`` the production load is ``sockperf under-load`` (TCP, C,
64-byte messages at ``--rate`` messages/s, every one answered, ``--seconds`` a round)
against a ``sockperf server`` in the server namespace: its round-trip p50/p99; the
client's CPU is the sockperf client's, mostly its own pacing and bookkeeping (~150 µs
a message against the server's 3-7 µs in a trial run), so read the server's.

    sudo .venv/bin/python bench/mirror.py [--rounds 4] [--sessions 100] [--requests 5]
    sudo .venv/bin/python bench/mirror.py --rounds 1 --sessions 10 --factors 1,10,100 \
        --repeat 3          # the x100 run of docs/mirror.md
    sudo .venv/bin/python bench/mirror.py --rounds 10 --sessions 250 --rate 1000 \
        --factors ''        # latency and CPU only, paced (docs/mirror.md)
    sudo .venv/bin/python bench/mirror.py --client sockperf --rate 2000 --rounds 10 \
        --modes off,dup,on --factors ''
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter

from dcnet.lab.builder import Lab
from dcnet.lab.mirror_service import read_log, request_bytes
from dcnet.mirror import pool, recording, replay, rules
from dcnet.mirror.replay import read_response

PY = sys.executable
CLIENT, SERVER, MIRROR, TARGET, PORT = "10.93.0.1", "10.93.1.2", "10.93.9.2", "10.94.0.254", 8080
POOL = "10.94.0.0/24"
SOCKPERF_PORT = 11111
SINK = "10.93.9.6"     # the "dup" mode's copies go here: no recorder, the kernel drops them


def topology(log_dir: str, rt: int = 0) -> dict:
    links = [
        {"a": {"host": "client", "ifname": "eth0", "addresses": [f"{CLIENT}/24"]},
         "b": {"host": "director", "ifname": "c0", "addresses": ["10.93.0.254/24"]}},
        {"a": {"host": "director", "ifname": "s0", "addresses": ["10.93.1.254/24"]},
         "b": {"host": "server", "ifname": "eth0", "addresses": [f"{SERVER}/24"]}},
        {"a": {"host": "director", "ifname": "mir0", "addresses": ["10.93.9.1/30"]},
         "b": {"host": "mirror", "ifname": "eth0", "addresses": [f"{MIRROR}/30"]}},
        {"a": {"host": "director", "ifname": "mir1", "addresses": ["10.93.9.5/30"]},
         "b": {"host": "sink", "ifname": "eth0", "addresses": [f"{SINK}/30"]}},
        {"a": {"host": "target", "ifname": "eth0", "addresses": [f"{TARGET}/24"]},
         "b": {"host": "sw", "ifname": "p-t", "bridge": "br0"}},
    ]
    serve = [PY, "-m", "dcnet.lab.mirror_service", "--port", str(PORT), "--log"]
    return {
        "hosts": ["client", {"name": "director", "sysctls": {"net.ipv4.ip_forward": 1}},
                  "server", "mirror", "sink", "target", "sw"],
        "bridges": [{"name": "br0", "host": "sw"}],
        "links": links,
        "routes": [{"host": "client", "dst": "default", "via": "10.93.0.254"},
                   {"host": "server", "dst": "default", "via": "10.93.1.254"}],
        "processes": [
            {"name": "prod", "host": "server", "argv": [
                *(["chrt", "-f", str(rt)] if rt else []), *serve, f"{log_dir}/prod.log"],
             "ready_tcp_port": PORT},
            {"name": "target", "host": "target", "argv": [*serve, f"{log_dir}/target.log"],
             "ready_tcp_port": PORT},
            {"name": "sockperf", "host": "server", "ready_tcp_port": SOCKPERF_PORT,
             "argv": ["sockperf", "server", "-i", SERVER, "-p", str(SOCKPERF_PORT), "--tcp"]},
        ],
    }


def load(threads: int, sessions: int, requests: int, tag: str, rate: float = 0.0,
         rt: int = 0) -> list[float]:
    """Client load (runs in the client namespace); per-request latencies in seconds.
    With ``rate`` (requests/s over all threads) each thread sends its k-th request no
    earlier than ``k * threads / rate`` seconds after the start (latency is still from
    the send: a late request is not charged its wait); without, closed loop."""
    latencies: list[float] = []
    lock = threading.Lock()
    interval = threads / rate if rate else 0.0
    start = time.perf_counter()

    def worker(w: int) -> None:
        if rt:       # this thread only (pid 0 is the calling thread)
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt))
        mine = []
        k = 0
        for s in range(sessions):
            with socket.create_connection((SERVER, PORT), timeout=10) as sock:
                rest = b""
                for r in range(requests):
                    if interval:
                        k += 1
                        delay = start + k * interval - time.perf_counter()
                        if delay > 0:
                            time.sleep(delay)
                    begin = time.perf_counter()
                    sock.sendall(request_bytes(SERVER, f"/{tag}w{w}s{s}/r{r}"))
                    _, rest = read_response(sock, rest)
                    mine.append(time.perf_counter() - begin)
        with lock:
            latencies.extend(mine)
    pool = [threading.Thread(daemon=True, target=worker, args=(w,)) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return latencies


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def softirq_seconds() -> float:
    """Softirq time of every CPU since boot (the ``cpu`` line of /proc/stat)."""
    with open("/proc/stat") as handle:
        return int(handle.readline().split()[7]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """This process's CPU and that of its reaped children (sockperf runs as one)."""
    return sum(u.ru_utime + u.ru_stime for u in (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN)))


def sockperf_round(lab, args) -> tuple[int, float, float, float]:
    """sockperf under-load (TCP, 64-byte messages, every one answered) at ``--rate``
    messages/s for ``--seconds``: (messages answered, their rate, p50 and p99 round trip
    in seconds), over sockperf's valid duration (its warm-up left out)."""
    done = lab.run("client", [
        "sockperf", "under-load", "-i", SERVER, "-p", str(SOCKPERF_PORT), "--tcp",
        "-t", str(args.seconds), "--mps", str(int(args.rate or 2000)), "-m", "64",
        "--reply-every", "1", "--full-rtt"], timeout=args.seconds + 60)
    text = done.stdout + done.stderr
    got = re.search(r"\[Valid Duration\] RunTime=([0-9.]+) sec.*ReceivedMessages=(\d+)",
                    text)
    p50, p99 = (float(re.search(rf"percentile {q} =\s+([0-9.]+)", text).group(1)) / 1e6
                for q in ("50.000", "99.000"))
    return int(got.group(2)), int(got.group(2)) / float(got.group(1)), p50, p99


def run_round(lab, args, tag: str, pids: dict[str, int]) -> dict:
    """One round of production load; its latency, rate, load average and CPU."""
    load1 = os.getloadavg()[0]
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    own, soft, begin = own_cpu_seconds(), softirq_seconds(), time.monotonic()
    if args.client == "sockperf":
        n, rate, p50, p99 = sockperf_round(lab, args)
        lat = []
    else:
        lat = lab.call("client", load, args.threads, args.sessions, args.requests, tag,
                       args.rate, args.rt)
        n, p50, p99 = len(lat), statistics.median(lat), pct(lat, 99)
    wall = time.monotonic() - begin
    if not lat:
        wall = n / rate             # sockperf's own measured duration
    cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    cpu["client"] = own_cpu_seconds() - own
    cpu["softirq"] = softirq_seconds() - soft
    return {"requests": n, "wall_s": wall, "rps": n / wall, "load1": load1,
            "p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3,
            "prod_cpu_us": (cpu["client"] + cpu["server"]) / n * 1e6,
            "server_cpu_us": cpu["server"] / n * 1e6,
            "softirq_us": cpu["softirq"] / n * 1e6,
            "recorder_cpu_us": cpu["recorder"] / n * 1e6, "latencies": lat}


def median_ci95(ordered: list[float]) -> list[float] | None:
    """A distribution-free 95% confidence interval of the median of sorted values (order
    statistics n/2 -+ 0.98 sqrt(n), the binomial's normal approximation); None below 6."""
    n = len(ordered)
    if n < 6:
        return None
    half = 0.98 * n ** 0.5
    low, high = max(0, int(n / 2 - half)), min(n - 1, int(n / 2 + half))
    return [round(ordered[low], 4), round(ordered[high], 4)]


def latency_cpu_summary(rounds: dict[str, list[dict]]) -> dict:
    """Per mode: medians over rounds, pooled percentiles; each mode's medians against
    "off"'s, and per cycle (the modes' rounds run one after another, same machine load)
    each mode's round against that cycle's "off" round: median, min and max."""
    keys = ("p50_ms", "p99_ms", "rps", "load1", "prod_cpu_us", "server_cpu_us",
            "softirq_us", "recorder_cpu_us")
    compared = ("p50_ms", "p99_ms", "prod_cpu_us", "server_cpu_us", "softirq_us")
    out: dict = {}
    for mode, rows in rounds.items():
        pooled = [x for r in rows for x in r["latencies"]] or [0.0]    # none: sockperf
        out[mode] = {"rounds": len(rows), "requests": sum(r["requests"] for r in rows),
                     "pooled_p50_ms": round(statistics.median(pooled) * 1e3, 3),
                     "pooled_p99_ms": round(pct(pooled, 99) * 1e3, 3),
                     **{f"median_{k}": round(statistics.median(r[k] for r in rows), 3)
                        for k in keys},
                     "per_round": [{k: round(r[k], 3) for k in keys} for r in rows]}
    off = out["off"]
    for mode in rounds:
        if mode == "off":
            continue
        ratios = {k: round(out[mode][f"median_{k}"] / off[f"median_{k}"], 4)
                  for k in compared if off[f"median_{k}"]}
        if off["pooled_p99_ms"]:
            ratios["pooled_p99"] = round(out[mode]["pooled_p99_ms"] / off["pooled_p99_ms"],
                                         4)
        out[f"ratio_{mode}_off"] = ratios
        pairs = list(zip(rounds["off"], rounds[mode], strict=False))
        out[f"pair_ratios_{mode}_off"] = {}
        for k in ("p50_ms", "p99_ms", "prod_cpu_us", "softirq_us"):
            each = sorted(b[k] / a[k] for a, b in pairs if a[k])
            if each:
                out[f"pair_ratios_{mode}_off"][k] = {
                    "median": round(statistics.median(each), 4),
                    "min": round(each[0], 4), "max": round(each[-1], 4),
                    "median_ci95": median_ci95(each)}
    return out


def paths_of(payload: bytes) -> list[str]:
    return [line.split(b" ")[1].decode() for line in payload.split(b"\r\n")
            if line.startswith(b"GET ")]


def replay_check(entries: list[dict], sessions: list[recording.Session]) -> list[dict]:
    wanted = Counter(p for s in sessions for p in paths_of(s.payload))
    per_copy: dict[str, list[str]] = {}
    for entry in entries:
        per_copy.setdefault(entry["src"].rpartition(":")[0], []).append(entry["path"])
    out = []
    for source, paths in sorted(per_copy.items()):
        got = Counter(paths)
        order = 0
        last: dict[str, int] = {}
        for p in paths:
            session, _, r = p.rpartition("/r")
            if int(r) < last.get(session, -1):
                order += 1
            last[session] = int(r)
        out.append({"source": source, "recorded": sum(wanted.values()),
                    "delivered": sum(min(got[p], n) for p, n in wanted.items()),
                    "duplicates": sum(max(0, got[p] - wanted[p]) for p in got),
                    "order_violations": order})
    return out


def replay_totals(per_copy: list[dict], summary: dict, sources: list[str],
                  wall: float, recorded: int) -> dict:
    """One replay run summed over its copies."""
    copies = len(summary["copies"])
    return {"copies": copies, "wall_s": round(wall, 2),
            "expected": recorded * copies,
            "delivered": sum(c["delivered"] for c in per_copy),
            "min_delivered_per_copy": min((c["delivered"] for c in per_copy), default=0),
            "duplicates": sum(c["duplicates"] for c in per_copy),
            "order_violations": sum(c["order_violations"] for c in per_copy),
            "failed_sessions": sum(c["errors"] for c in summary["copies"]),
            "failed_copies": sum(1 for c in summary["copies"] if c["exit"] != 0),
            "sources_ok": sorted(c["source"] for c in per_copy) == sorted(sources[:copies])}


def recorder_stats(path: str) -> dict:
    """The recorder's last stderr line: sessions, segments, kernel packets and drops."""
    with open(path) as handle:
        return json.loads(handle.read().strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--sessions", type=int, default=50, help="per thread and round")
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="paced load, requests/s over all threads (0: closed loop)")
    parser.add_argument("--modes", default="off,on",
                        help="round modes in cycle order: off, on (copies to the recorder),"
                             " dup (copies to a namespace without a recorder)")
    parser.add_argument("--client", choices=("http", "sockperf"), default="http",
                        help="production load: the Python HTTP clients, or sockperf "
                             "under-load (TCP, C, at --rate messages/s, default 2000)")
    parser.add_argument("--seconds", type=int, default=5, help="sockperf round length")
    parser.add_argument("--rt", type=int, default=0, metavar="PRIO",
                        help="run the client threads and the HTTP server SCHED_FIFO at PRIO "
                             "(shields the production path from other work; the recorder "
                             "stays SCHED_OTHER)")
    parser.add_argument("--percent", type=int, default=100,
                        help="share of sessions mirrored (by hash) in the dup and on modes")
    parser.add_argument("--factors", default="1,10,100", help="replay factors, comma-separated")
    parser.add_argument("--repeat", type=int, default=1, help="replays per factor")
    parser.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True,
                        help="one unmeasured round first")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="dcnet-mirror-bench-")
    result: dict = {"args": vars(args), "cpus": os.cpu_count()}
    with Lab(topology(work, args.rt)) as lab:
        services = ((SERVER, PORT), (SERVER, SOCKPERF_PORT))
        spec = rules.MirrorSpec(services, MIRROR, "mir0", args.percent)
        rec = f"{work}/rec.jsonl"
        recorder = lab.start("mirror", [PY, "-m", "dcnet.mirror.recorder", "--ifname", "eth0",
                                        "--out", rec], name="recorder",
                             log_path=f"{work}/recorder.log")
        while not os.path.exists(rec):
            time.sleep(0.05)
        modes = args.modes.split(",")
        rounds: dict[str, list[dict]] = {mode: [] for mode in modes}
        sink_spec = rules.MirrorSpec(services, SINK, "mir1", args.percent)
        pids = {"server": lab.process("sockperf" if args.client == "sockperf" else "prod").pid,
                "recorder": recorder.pid}
        mirrored_paths: set[str] = set()
        if args.warmup and args.client == "sockperf":
            sockperf_round(lab, args)
        elif args.warmup:
            lab.call("client", load, args.threads, args.sessions, args.requests, "warm",
                     args.rate, args.rt)
        for i in range(args.rounds * len(modes)):
            mode = modes[i % len(modes)]
            if mode != "off":
                rules.apply(spec if mode == "on" else sink_spec, lab.netns("director"))
            rounds[mode].append(run_round(lab, args, f"x{i}", pids))
            if mode != "off":
                rules.remove(lab.netns("director"))
            if mode == "on":
                mirrored_paths |= {e["path"] for e in read_log(f"{work}/prod.log")
                                   if e["path"].startswith(f"/x{i}w")}
        time.sleep(0.5)
        cpu = cpu_seconds(recorder.pid)
        os.kill(recorder.pid, signal.SIGTERM)
        recorder.wait(30)
        sessions = recording.read(rec)
        recorded = [p for s in sessions for p in paths_of(s.payload)]
        result["production"] = latency_cpu_summary(rounds)
        result["capture"] = {
            "production_requests_mirrored_rounds": len(mirrored_paths),
            "recorded_requests": len(recorded),
            "recorded_of_production": len(set(recorded) & mirrored_paths),
            "sessions": len(sessions), "sessions_with_missing_bytes":
                sum(1 for s in sessions if s.missing), "recorder_cpu_s": round(cpu, 2),
            "recorder_stats": recorder_stats(f"{work}/recorder.log")}
        factors = [float(f) for f in args.factors.split(",") if f]
        if not factors:
            print(json.dumps(result, indent=2))
            return 0
        done = 0
        made = pool.SourcePool(POOL, replay.copy_count(max(factors)), "br0",
                               lab.netns("sw"), reserved=[TARGET])
        begin = time.monotonic()
        with made:
            result["pool_build_s"] = round(time.monotonic() - begin, 2)
            for factor in factors:
                runs = []
                for repeat in range(args.repeat):
                    out = f"{work}/x{factor:g}-{repeat}"
                    os.makedirs(out)
                    begin = time.monotonic()
                    summary = replay.run_replay(rec, factor, f"{TARGET}:{PORT}",
                                                made.namespaces, out)
                    wall = time.monotonic() - begin
                    entries = read_log(f"{work}/target.log")[done:]
                    done += len(entries)
                    runs.append(replay_totals(replay_check(entries, sessions), summary,
                                              made.sources, wall, len(recorded)))
                result[f"replay_x{factor:g}"] = {
                    "runs": runs, "median": {k: statistics.median(r[k] for r in runs)
                                             for k in runs[0] if k != "sources_ok"}}
            begin = time.monotonic()
        result["pool_teardown_s"] = round(time.monotonic() - begin, 2)
        result["pool_left_over"] = pool.leftovers()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
