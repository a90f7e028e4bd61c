"""Benchmark: loading and validating the service model at 1,000 and 10,000 services.

    .venv/bin/python bench/model_load.py [--services 10000] [--baseline 1000] [--runs 5]

The model is bench/dns_render.py's synthetic one (4 carriers, 3 with 500-prefix CIDR
lists), generated here by :func:`write_model` (a copy, so this bench does not import the
DNS back end). For each size it measures, in fresh subprocesses run in interleaved order:

- ``plain``: ``yaml.load`` with libyaml's CSafeLoader (no line tracking, no checks):
  the floor any YAML model loader pays;
- ``dcnet``: ``dcnet.model.load_model`` (line-tracked parse, field readers, rules).

It prints medians of the CPU time each load took (``time.process_time``: on a shared,
loaded machine wall time mostly measures the neighbours) and the ratios dcnet / plain
and 10,000 / 1,000 (for linear code that last one is ~10). ``--before DIR`` adds the
same measurement for the dcnet package of another checkout (e.g. ``git worktree add
/tmp/old HEAD~1``), run side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from synthetic import write_model  # bench/ sibling: the model dns_render.py uses

MEASURE = """
import sys, time
path, what = sys.argv[1], sys.argv[2]
if what == "plain":
    import yaml
    start = time.process_time()
    with open(path) as fh:
        yaml.load(fh, Loader=yaml.CSafeLoader)
else:
    from dcnet.model import load_model
    start = time.process_time()
    load_model(path)
print(time.process_time() - start)
"""


def measure(path: Path, what: str, tree: str | None = None) -> float:
    env = dict(os.environ, PYTHONPATH=tree) if tree else None
    # cwd: ``python -c`` puts the working directory first on sys.path, ahead of PYTHONPATH
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path), what], check=True,
                         capture_output=True, text=True, env=env, cwd=path.parent).stdout
    return float(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", metavar="DIR", help="another checkout to compare with")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for size in (args.baseline, args.services):
            directory = Path(tmp) / str(size)
            directory.mkdir()
            paths[size] = write_model(directory, size)
        times: dict[tuple[int, str], list[float]] = {}
        for _ in range(args.runs):
            for size, path in paths.items():
                for what in kinds(args):
                    tree = args.before if what == "before" else None
                    kind = "dcnet" if what == "before" else what
                    times.setdefault((size, what), []).append(measure(path, kind, tree))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"CPU seconds, medians of {args.runs} runs (load average {os.getloadavg()[0]:.1f})")
    print(f"{'':24}{args.baseline:>12,} svc{args.services:>12,} svc{'ratio':>9}")
    for what in kinds(args):
        a, b = med[(args.baseline, what)], med[(args.services, what)]
        print(f"{what + ' load':24}{a * 1000:>12.0f} ms{b * 1000:>12.0f} ms{b / a:>8.1f}x")
    for size in (args.baseline, args.services):
        print(f"dcnet / plain at {size:,} services: "
              f"{med[(size, 'dcnet')] / med[(size, 'plain')]:.2f}x" + (
                  f"; dcnet / before: {med[(size, 'dcnet')] / med[(size, 'before')]:.2f}x"
                  if args.before else ""))


def kinds(args) -> tuple[str, ...]:
    return ("plain", "dcnet", "before") if args.before else ("plain", "dcnet")


if __name__ == "__main__":
    main()
