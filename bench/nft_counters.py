"""Benchmark: what reading the nft target's traffic counters costs at N services.

    .venv/bin/python bench/nft_counters.py [--services 10000] [--servers 10] [--runs 5]

Fills a fresh network namespace with what ``elbctl apply --target nft`` writes for
``--services`` NAT services of ``--servers`` real servers (one full sync, which also
checks that a second plan is empty), then times, ``--runs`` times each and interleaved,
the readings a scrape could make:

- ``netlink``: one ``NFT_MSG_GETOBJ`` dump of the table's counters, decoded
  (:class:`dcnet.nft.objects.CounterReader`: what ``elbctl exporter --target nft``
  reads), in this process (wall and CPU time);
- ``counters``: ``nft -j list counters table inet dcnet`` (the same objects through
  nft, which loads its cache of every chain and rule first), and its parse;
- ``terse``: ``nft -j -t list table inet dcnet`` (every chain and rule, no set
  elements): the least a reading of anonymous counters in the service chains' rules
  would list;
- ``table``: ``nft -j list table inet dcnet`` (also every map and set element: the
  Maglev maps, the counter maps);
- ``cin``: ``nft -j list map inet dcnet cin`` (one counter map's elements).

The three nft listings that load every chain run ``--slow-runs`` times (default once:
minutes each at 10,000 services). Prints the wall time of each (median, min, max), the
listing's size and the full sync's time; the load average at the start and at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SLOW = ("counters", "terse", "table")
READS = {
    "netlink": [],                          # in this process: dcnet.nft.objects
    "counters": ["list", "counters", "table", "inet", "dcnet"],
    "terse": ["-t", "list", "table", "inet", "dcnet"],
    "table": ["list", "table", "inet", "dcnet"],
    "cin": ["list", "map", "inet", "dcnet", "cin"],
}


def main() -> None:
    from dcnet.nft import synth
    from dcnet.nft.nftio import parse_counters
    from dcnet.nft.objects import CounterReader
    from dcnet.target import apply_plan, make_plan, registry

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--servers", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reads", default=",".join(READS))
    parser.add_argument("--slow-runs", type=int, default=1, help="runs of the nft "
                        "listings that load every chain: counters, terse, table (minutes "
                        "each at 10,000 services)")
    args = parser.parse_args()
    print(f"{args.services} services x {args.servers} real servers, {args.runs} runs; "
          f"load {os.getloadavg()[0]:.1f} at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
          flush=True)
    ns = f"dcbench{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        with tempfile.TemporaryDirectory() as state:
            model = synth.model(synth.model_text(args.services, args.servers))
            options = {"netns": ns, "state_dir": state}
            started = time.perf_counter()
            target = registry.create("nft", **options)
            with target.lock(600):
                plan = make_plan(target, model)
                apply_plan(target, plan)
            print(f"full sync: {time.perf_counter() - started:.1f} s, "
                  f"{len(plan.changes)} objects", flush=True)
            with target.lock(600):
                assert make_plan(target, model).empty, "a second plan is not empty"
            target.close()
            times: dict[str, list[float]] = {r: [] for r in args.reads.split(",")}
            reader = CounterReader(ns)
            cpus: list[float] = []
            sizes: dict[str, int] = {}
            parse: list[float] = []
            for run in range(args.runs):
                for name in times:
                    if name in SLOW and run >= args.slow_runs:
                        continue
                    started = time.perf_counter()
                    if name == "netlink":
                        cpu = time.process_time()
                        rows = reader.read()
                        times[name].append(time.perf_counter() - started)
                        cpus.append(time.process_time() - cpu)
                        sizes[name] = 0
                        assert len(rows) == args.services, len(rows)
                        print(f"  {name}: {times[name][-1]:.3f} s ({cpus[-1]:.3f} CPU s)",
                              flush=True)
                        continue
                    done = subprocess.run(["ip", "netns", "exec", ns, "nft", "-j",
                                           *READS[name]], capture_output=True, text=True,
                                          check=True)
                    times[name].append(time.perf_counter() - started)
                    sizes[name] = len(done.stdout)
                    print(f"  {name}: {times[name][-1]:.3f} s", flush=True)
                    if name == "counters":
                        started = time.perf_counter()
                        rows = parse_counters(done.stdout)
                        parse.append(time.perf_counter() - started)
                        assert len(rows) == args.services, len(rows)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    print(f"{'read':<10} {'median s':>9} {'min s':>7} {'max s':>7} {'MiB':>7}")
    for name, values in times.items():
        print(f"{name:<10} {statistics.median(values):>9.3f} {min(values):>7.3f} "
              f"{max(values):>7.3f} {sizes[name] / 2**20:>7.1f}")
    if cpus:
        print(f"netlink read: {statistics.median(cpus):.3f} CPU s of this process (median; "
              "the first read also parses every counter name)")
    if parse:
        print(f"parse of the counters listing: {statistics.median(parse) * 1000:.0f} ms "
              f"(median)")
    print(f"load {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
