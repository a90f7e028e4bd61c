"""Benchmark: loading and validating the service model at 1,000 and 10,000 services.

    .venv/bin/python bench/model_load.py [--services 10000] [--baseline 1000] [--runs 5]
        [--model synthetic|scrape] [--servers 10] [--children] [--before DIR]

``--model synthetic`` (the default) is bench/dns_render.py's synthetic model (4 carriers,
3 with 500-prefix CIDR lists, one real server a service), generated here by
:func:`write_model` (a copy, so this bench does not import the DNS back end); ``scrape``
is bench/metrics_scrape.py's (one carrier, ``--servers`` real servers a service: the
exporter's 10,000 x 10). For each size it measures, in fresh subprocesses run in
interleaved order:

- ``plain``: ``yaml.load`` with libyaml's CSafeLoader (no line tracking, no checks):
  the floor any YAML model loader pays;
- ``composed``: ``dcnet.model.load_model`` with the YAML read as before 133576f (PyYAML's
  node tree composed and walked: ``dcnet.model.yamlsource.load_composed``);
- ``dcnet``: ``dcnet.model.load_model`` as it is (line-tracked parse, field readers,
  rules; plain documents built from libyaml's events, ``dcnet.model.yamlevents``);
- with ``--children``, ``first`` and ``drift``: ``elbctl exporter``'s loader child
  (``check_in_child``, of ``dcnet.target.watch`` since ce60675, run by
  ``dcnet.metrics.isolated.call`` as ``IsolatedWatch`` runs it, no target): the first
  parses the model and pickles it (each service as it is read since c0c6354), a drift
  check's unpickles that and is given the digest of the first one's index, as
  ``IsolatedWatch`` gives them (its CPU time includes the child's interpreter start and
  imports; the ``drift`` row's pickled model and digest are made beforehand by another
  process with ``check_in_child`` run in it: the measuring process stays small, though
  the child starts from nothing). The measuring process is ``python -c``: a child
  started by ``multiprocessing``'s spawn (trees before the child runner of
  ``isolated.call``) runs no main module again here, as it did the ``elbctl`` console
  script in the exporter (the CLI's imports: about 3 MiB of each such child's peak).

It prints medians of the CPU time each load took (``time.process_time``: on a shared,
loaded machine wall time mostly measures the neighbours) and of the process's peak
resident set (VmHWM, the interpreter and its imports included), and the ratios dcnet /
plain, dcnet / composed, each row / its ``before`` row and 10,000 / 1,000 (for linear
code that last one is ~10).
``--before DIR`` adds the ``dcnet`` (and child) rows for the dcnet package of another
checkout (e.g. ``git worktree add /tmp/old HEAD~1``), run side by side.
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
elif what == "pickle":   # the model and index digest as the first loader child hands them
    import pickle, zlib
    from dcnet.cli.elbctl_metrics import check_in_child
    with open(path, "rb") as fh:
        text = zlib.compress(fh.read(), 6)
    digest, _, _, made = check_in_child({}, path, text, 5.0, {}, None, False, False)
    with open(path + ".pickled", "wb") as fh:
        pickle.dump((made, digest), fh)
    raise SystemExit
elif what in ("first", "drift"):       # elbctl exporter's loader child, as it runs it
    import pickle, resource, zlib
    from dcnet.cli.elbctl_metrics import check_in_child
    from dcnet.metrics import isolated
    with open(path, "rb") as fh:
        text = zlib.compress(fh.read(), 6)
    pickled = known = None
    if what == "drift":   # later children unpickle what the first made (see measure())
        with open(path + ".pickled", "rb") as fh:
            (pickled, known), text = pickle.load(fh), None
    isolated.call(check_in_child, {}, path, text, 5.0, {}, known, what == "drift", False,
                  pickled)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)   # that child's alone
    print(usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)
    raise SystemExit
else:
    from dcnet.model import load_model, loader
    if what == "composed":
        from dcnet.model.yamlsource import load_composed
        loader.load_located = load_composed
    start = time.process_time()
    load_model(path)
spent = time.process_time() - start
with open("/proc/self/status") as fh:
    peak = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
print(spent, peak / 1024)
"""


def measure(path: Path, what: str, tree: str | None = None) -> tuple[float, float]:
    """CPU seconds of one load and the process's peak RSS in MiB."""
    env = dict(os.environ, PYTHONPATH=tree) if tree else None
    if what == "drift":
        # made by another process: a child forked by a process that holds the model
        # starts with that process's resident set, and its peak (ru_maxrss) with it
        subprocess.run([sys.executable, "-c", MEASURE, str(path), "pickle"], check=True,
                       env=env, cwd=path.parent)
    # cwd: ``python -c`` puts the working directory first on sys.path, ahead of PYTHONPATH
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path), what], check=True,
                         capture_output=True, text=True, env=env, cwd=path.parent).stdout
    spent, peak = out.split()
    return float(spent), float(peak)


def write(directory: Path, services: int, args) -> Path:
    if args.model == "synthetic":
        return write_model(directory, services)
    from metrics_scrape import model_text  # bench/ sibling: the exporter bench's model

    path = directory / "model.yaml"
    path.write_text(model_text(services, args.servers))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", choices=("synthetic", "scrape"), default="synthetic")
    parser.add_argument("--servers", type=int, default=10,
                        help="real servers a service (--model scrape)")
    parser.add_argument("--before", metavar="DIR", help="another checkout to compare with")
    parser.add_argument("--children", action="store_true",
                        help="also elbctl exporter's first and drift-check loader children")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for size in (args.baseline, args.services):
            directory = Path(tmp) / str(size)
            directory.mkdir()
            paths[size] = write(directory, size, args)
        results: dict[tuple[int, str], list[tuple[float, float]]] = {}
        for _ in range(args.runs):
            for size, path in paths.items():
                for what in kinds(args):
                    tree = args.before if what.startswith("before") else None
                    kind = what.split()[-1] if what.startswith("before ") else (
                        "dcnet" if what == "before" else what)
                    results.setdefault((size, what), []).append(measure(path, kind, tree))
    cpu = {k: statistics.median(t for t, _ in v) for k, v in results.items()}
    peak = {k: statistics.median(m for _, m in v) for k, v in results.items()}
    print(f"{args.model} model ({args.servers if args.model == 'scrape' else 1} real "
          f"server(s) a service), medians of {args.runs} runs (load average "
          f"{os.getloadavg()[0]:.1f}): CPU seconds of the load, peak RSS of the process")
    print(f"{'':16}{args.baseline:>10,} svc{args.services:>10,} svc{'ratio':>8}"
          f"{args.baseline:>10,} svc{args.services:>10,} svc")
    for what in kinds(args):
        a, b = cpu[(args.baseline, what)], cpu[(args.services, what)]
        print(f"{what:16}{a * 1000:>10.0f} ms{b * 1000:>10.0f} ms{b / a:>7.1f}x"
              f"{peak[(args.baseline, what)]:>9.0f} MiB{peak[(args.services, what)]:>9.0f} MiB")
    for size in (args.baseline, args.services):
        line = (f"at {size:,} services: dcnet / plain CPU "
                f"{cpu[(size, 'dcnet')] / cpu[(size, 'plain')]:.2f}x")
        for now, other in (("dcnet", "composed"), ("dcnet", "before"),
                           ("first", "before first"), ("drift", "before drift")):
            if (size, other) in cpu:
                line += (f"; {now} / {other} CPU {cpu[(size, now)] / cpu[(size, other)]:.2f}x,"
                         f" peak {peak[(size, now)] / peak[(size, other)]:.2f}x")
        print(line)


def kinds(args) -> list[str]:
    """The rows: "plain" and "dcnet" first (the ratios' bases)."""
    rows = ["plain", "dcnet", "composed"] + (["before"] if args.before else [])
    if args.children:
        rows += ["first", "drift"] + (["before first", "before drift"] if args.before else [])
    return rows


if __name__ == "__main__":
    main()
