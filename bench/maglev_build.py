"""Benchmark: Maglev table build, the sequential pure-Python reference (the algorithm as
it was, tests/unit/maglev_reference.py) against ``dcnet.nft.maglev.build``, side by side.

    .venv/bin/python bench/maglev_build.py [--backends 10 100 1000] [--builds 7]

Per backend count N (servers named as the nft target names them, by address; weight 1;
M = ``maglev.table_size(N)``): ``--builds`` builds of each, interleaved (old, new, old,
...), medians of CPU time (``time.process_time``: what a build costs, whatever else runs
on the machine) and of wall time, the ratio, and a check that both tables are
byte-identical. Prints the load average before and after, and what importing numpy
costs a fresh process once (the bulk build imports it lazily; below
``maglev.BULK_FROM`` backends the build does not).
"""

from __future__ import annotations

import argparse
import os
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--builds", type=int, default=7)
    args = parser.parse_args()
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print("| N | M | old CPU ms | new CPU ms | CPU ratio | old wall ms | new wall ms |"
          " identical |")
    print("|---|---|---|---|---|---|---|---|")
    for count in args.backends:
        weights = {f"10.64.{i // 250}.{i % 250}": 1 for i in range(count)}
        size = maglev.table_size(count)
        old_cpu, new_cpu, old_wall, new_wall = [], [], [], []
        same = True
        for _ in range(args.builds):
            old, cpu, wall = timed(maglev_reference.build, weights, size)
            old_cpu.append(cpu)
            old_wall.append(wall)
            new, cpu, wall = timed(maglev.build, weights, size)
            new_cpu.append(cpu)
            new_wall.append(wall)
            same = same and maglev.table_bytes(old) == maglev.table_bytes(new)
        oc, nc = statistics.median(old_cpu) * 1e3, statistics.median(new_cpu) * 1e3
        print(f"| {count} | {size} | {oc:.1f} | {nc:.1f} | {nc / oc:.2f} |"
              f" {statistics.median(old_wall) * 1e3:.1f} |"
              f" {statistics.median(new_wall) * 1e3:.1f} | {'yes' if same else 'NO'} |")
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
