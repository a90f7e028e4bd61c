"""Benchmark: Maglev table build, ``dcnet.nft.maglev.build`` against the sequential
pure-Python reference (the algorithm as it was, tests/unit/maglev_reference.py) or, with
``--before WT``, against the build of another checkout (a ``git worktree`` of the commit
before a change), side by side.

    .venv/bin/python bench/maglev_build.py [--backends 10 100 1000] [--builds 7]
        [--weights equal uneven] [--before WT] [--runs 1]

Per backend count N and weights (servers named as the nft target names them, by
address; ``equal``: weight 1, ``uneven``: weights 1, 2, 3, 5 or 64 drawn with a fixed
seed; M = ``maglev.table_size(N)``): ``--builds`` builds of each, interleaved (old, new,
old, ...), medians of CPU time (``time.process_time``: what a build costs, whatever else
runs on the machine) and of wall time, the ratio, and a check that the tables are
byte-identical (with ``--before``: both builds and the reference, which is then built
once, untimed). ``--runs``: the whole table that many times. Prints the load average
before and after, and what importing numpy costs a fresh process once (the bulk build
imports it lazily; below ``maglev.BULK_FROM`` backends the build does not).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcnet.nft import maglev
from tests.unit import maglev_reference


def timed(build, weights, size):
    cpu, wall = time.process_time(), time.perf_counter()
    table = build(weights, size)
    return table, time.process_time() - cpu, time.perf_counter() - wall


def before_build(tree: str):
    """``build`` of ``tree``'s dcnet/nft/maglev.py (its own module, beside ours)."""
    path = Path(tree) / "dcnet" / "nft" / "maglev.py"
    spec = importlib.util.spec_from_file_location("maglev_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build


def backends(count: int, kind: str) -> dict[str, int]:
    names = [f"10.64.{i // 250}.{i % 250}" for i in range(count)]
    if kind == "equal":
        return dict.fromkeys(names, 1)
    rng = random.Random(count)
    return {n: rng.choice([1, 2, 3, 5, 64]) for n in names}


def row(count: int, kind: str, builds: int, old_build) -> str:
    weights = backends(count, kind)
    size = maglev.table_size(count)
    want = maglev.table_bytes(maglev_reference.build(weights, size)) if old_build else None
    old_build = old_build or maglev_reference.build
    old_cpu, new_cpu, old_wall, new_wall = [], [], [], []
    same = True
    for _ in range(builds):
        old, cpu, wall = timed(old_build, weights, size)
        old_cpu.append(cpu)
        old_wall.append(wall)
        new, cpu, wall = timed(maglev.build, weights, size)
        new_cpu.append(cpu)
        new_wall.append(wall)
        got = maglev.table_bytes(new)
        same = same and got == maglev.table_bytes(old) and want in (None, got)
    oc, nc = statistics.median(old_cpu) * 1e3, statistics.median(new_cpu) * 1e3
    return (f"| {count} | {kind} | {size} | {oc:.1f} | {nc:.1f} | {nc / oc:.2f} |"
            f" {statistics.median(old_wall) * 1e3:.1f} |"
            f" {statistics.median(new_wall) * 1e3:.1f} | {'yes' if same else 'NO'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--builds", type=int, default=7)
    parser.add_argument("--weights", nargs="+", choices=["equal", "uneven"],
                        default=["equal"])
    parser.add_argument("--before", metavar="WT",
                        help="compare with the build of this checkout, not the reference")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    old_build = before_build(args.before) if args.before else None
    old = f"before ({args.before})" if args.before else "reference"
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    for run in range(args.runs):
        if args.runs > 1:
            print(f"\nrun {run + 1} of {args.runs}")
        print(f"| N | weights | M | {old} CPU ms | new CPU ms | CPU ratio | old wall ms |"
              " new wall ms | identical |")
        print("|---|---|---|---|---|---|---|---|---|")
        for count in args.backends:
            for kind in args.weights:
                print(row(count, kind, args.builds, old_build), flush=True)
    imports = []
    probe = ("import time; c, w = time.process_time(), time.perf_counter(); import numpy; "
             "print(time.process_time() - c, time.perf_counter() - w)")
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                             text=True).stdout.split()
        imports.append((float(out[0]), float(out[1])))
    print(f"importing numpy, once per process: "
          f"{statistics.median(c for c, _w in imports) * 1e3:.0f} ms CPU, "
          f"{statistics.median(w for _c, w in imports) * 1e3:.0f} ms wall")
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
