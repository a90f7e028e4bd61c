"""Benchmark: the nft target's full sync, no-op and one-service update, and Maglev builds.

    .venv/bin/python bench/nft_apply.py [--services 1000 10000] [--servers 10] [--runs 3]

For each size, each run in a fresh network namespace (``ip netns add``; nft runs inside
it through ``--nft-netns``), every sync being what ``elbctl apply --target nft`` runs once
the model is loaded (``make_plan`` + ``apply_plan`` under the target's lock; the model is
built from the model's types, not parsed: bench/model_load.py measures loading):

1. ``full``: from an empty namespace (one nft transaction);
2. ``no-op``: the same model again (must write nothing): the generation id still matches
   the record of step 1, so the table is not listed (dcnet.nft.fingerprint);
3. ``no-op read``: the same with the record removed first: the full read (one listing of
   dcnet's table, parse, build, diff), what every no-op would cost without the record;
4. ``one``: one service's weights changed (a service chain rewritten; fast path).

Prints every run, then the medians, the no-op / full ratio and the Maglev table build
time at 1000 backends (median of 5).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def model_for(services: int, servers: int, changed: bool = False):
    """``services`` NAT services (tcp/80 -> 8080) of ``servers`` real servers each;
    ``changed``: the first service's weights differ."""
    from dcnet.model.jobname import JobName
    from dcnet.model.types import Carrier, Forwarding, Model, Port, Protocol, RealServer, Service

    carrier = Carrier("lab", "up0", ipaddress.ip_address("192.0.2.1"), 101,
                      (ipaddress.ip_network("10.0.0.0/8"),), default=True)
    out = []
    for i in range(services):
        vip = ipaddress.ip_address(f"10.{i // 250 % 250}.{i % 250}.1")
        port = Port(80, Protocol.TCP, "wrr", Forwarding.NAT, 0, 8080)
        reals = tuple(RealServer(ipaddress.ip_address(
            f"172.16.{(i * servers + j) // 250 % 250}.{(i * servers + j) % 250 + 1}"),
            (j + 2 if changed and i == 0 else j + 1)) for j in range(servers))
        job = JobName(f"j{i}", f"s{i}", f"c{i % 50}", f"p{i % 10}", "o", "bench")
        out.append(Service(job, (("lab", vip),), (port,), reals))
    return Model("bench", (carrier,), tuple(out))


def sync(options: dict, model) -> tuple[float, float, int, int]:
    """(plan seconds, apply seconds, changes, nft transactions) of one sync."""
    from dcnet.target import apply_plan, make_plan, registry

    target = registry.create("nft", **options)
    with target.lock(600):
        started = time.perf_counter()
        plan = make_plan(target, model)
        planned = time.perf_counter()
        result = apply_plan(target, plan, force=True)
        done = time.perf_counter()
    if not result.ok:
        raise SystemExit(f"apply failed: {result.to_text()[-2000:]}")
    return planned - started, done - planned, len(plan.changes), \
        result.writes["nft_transactions"]


def bench_size(services: int, servers: int, runs: int) -> dict[str, list[float]]:
    base, changed = model_for(services, servers), model_for(services, servers, True)
    times: dict[str, list[float]] = {"full": [], "no-op": [], "no-op read": [], "one": []}
    print(f"{services} services x {servers} backends", flush=True)
    for run in range(runs):
        name = f"nftbench-{os.getpid()}-{run}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        try:
            with tempfile.TemporaryDirectory() as state_dir:
                options = {"netns": name, "state_dir": state_dir}
                for label, model in (("full", base), ("no-op", base), ("no-op read", base),
                                     ("one", changed)):
                    if label == "no-op read":
                        os.unlink(os.path.join(state_dir, f"fingerprint-{name}"))
                    plan_s, apply_s, changes, tx = sync(options, model)
                    times[label].append(plan_s + apply_s)
                    print(f"  run {run + 1}: {label:<10} {plan_s + apply_s:8.3f}s (plan "
                          f"{plan_s:.3f}, apply {apply_s:.3f}) {changes} change(s), "
                          f"{tx} transaction(s)", flush=True)
        finally:
            subprocess.run(["ip", "netns", "del", name], check=False)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"  median: full {med['full']:.3f}s, no-op {med['no-op']:.3f}s "
          f"({med['no-op'] / med['full']:.1%} of full), no-op with full read "
          f"{med['no-op read']:.3f}s ({med['no-op read'] / med['full']:.1%}), "
          f"one service {med['one']:.3f}s "
          f"({med['one'] / med['full']:.1%} of full)", flush=True)
    return times


def bench_maglev() -> None:
    from dcnet.nft import maglev

    names = {f"be-{i}": 1 for i in range(1000)}
    size = maglev.table_size(len(names))
    took = []
    for _ in range(5):
        started = time.perf_counter()
        table = maglev.build(names, size)
        took.append(time.perf_counter() - started)
    loads = maglev.loads(table, len(names))
    print(f"maglev: 1000 backends, M={size}: build median {statistics.median(took) * 1000:.0f}"
          f" ms, max/mean load {max(loads) / (size / len(names)):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--servers", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (creates network namespaces)")
    subprocess.run(["nft", "--version"], check=True)
    for services in args.services:
        bench_size(services, args.servers, args.runs)
    bench_maglev()


if __name__ == "__main__":
    main()
