"""Benchmark: the peak of ``elbctl exporter``'s drift-check children planning against a
live target (nft in a network namespace, or a real HAProxy), at 10,000 x 10.

    .venv/bin/python bench/drift_child.py --target nft|haproxy [--services 10000]
        [--servers 10] [--forward nat] [--checks 3] [--interval 5] [--runs 1]
        [--trees before=DIR,after=.] [--foreign-commit]

It writes bench/metrics_scrape.py's model (one carrier, ``--servers`` real servers a
service, its port forwarded as ``--forward`` says: ``nat`` by default, which the nft
target renders; the model's default, ``dr``, it skips without ``--nft-dr``), makes a
network namespace, and puts the target in it at that model: ``nft``: ``elbctl apply
--target nft --nft-netns NS --nft-state-dir DIR`` (the exporter is given the same state
directory, so its plan finds the apply's record, as on a director; with
``--foreign-commit`` another table is added in the namespace after the apply, as another
nft user would, and every plan reads the table); ``haproxy``: a
master-worker HAProxy started in the namespace on the model's rendered configuration
(``dcnet.haproxy.daemon``; the VIPs are local routes on its loopback). The services'
health check is ``--check`` (default ``none`` for haproxy: HAProxy reserves a descriptor
per checked server, 160,000 at 10,000 x 10, over this host's hard RLIMIT_NOFILE of
20,000, which root here may not raise).
Then, per source tree and run, interleaved, the real ``elbctl exporter -f MODEL --target
T --drift-interval INTERVAL`` (dcnet from that tree through ``PYTHONPATH``), whose loader
children are found every 10 ms (``/proc/PID/task/*/children``) and their VmHWM read from
``/proc/PID/status`` until the exporter has run its first child and ``--checks`` drift
checks (a lower bound of each peak: the last 10 ms of a child are not seen); then
``dcnet_elb_drift`` is scraped (0: no drift, as it must be on a target at the model).
Prints each run's first-child peak, each drift child's peak and the exporter's own
VmHWM, and per tree the medians. Every namespace and process started is removed.
"""

from __future__ import annotations

import argparse
import glob
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from metrics_scrape import model_text  # bench/ sibling: the exporter bench's model

ELBCTL = [sys.executable, "-m", "dcnet.cli.elbctl"]


def status(pid: int, field: str) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def children(pid: int) -> set[int]:
    found = set()
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(path) as handle:
                found.update(int(p) for p in handle.read().split())
        except OSError:
            pass
    return found


def drift_value(port: int, target: str) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as r:
            body = r.read().decode()
    except OSError:
        return None
    for line in body.splitlines():
        if line.startswith(f'dcnet_elb_drift{{target="{target}"}}'):
            return line.split()[-1]
    return None


def start_exporter(target: str, model: str, options: list[str], interval: float,
                   tree: str | None) -> tuple[subprocess.Popen, int]:
    """``elbctl exporter -f MODEL --target TARGET`` with ``options`` and drift checks
    every ``interval`` s, dcnet from ``tree`` (None: this one), on a free loopback port;
    (the process, its port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = os.path.abspath(tree)
    exporter = subprocess.Popen(
        [*ELBCTL, "exporter", "-f", model, "--target", target, *options,
         "--drift-interval", str(interval), "--metrics-address", f"127.0.0.1:{port}"],
        env=env, cwd=os.path.abspath(tree) if tree else None,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return exporter, port


def run_exporter(args, model: str, options: list[str], tree: str | None) -> dict:
    exporter, port = start_exporter(args.target, model, options, args.interval, tree)
    try:
        watched = watch_children(exporter, args.checks + 1, time.monotonic() + 60
                                 + (args.checks + 1) * (args.interval + 60))
        drift = drift_value(port, args.target)
        own = status(exporter.pid, "VmHWM")
    finally:
        err = stop(exporter, 30)
    return {**result(watched, args.checks, err), "exporter": own, "value": drift}


class Watched:
    """The exporter's children in the order they appeared: each one's VmHWM and when it
    ended (seconds since the watch began)."""

    def __init__(self):
        self.peaks: dict[int, float] = {}
        self.order: list[int] = []
        self.ended: dict[int, float] = {}


def watch_children(exporter, count: int, deadline: float) -> Watched:
    """Every 10 ms, the exporter's children and their VmHWM (a lower bound: a child's
    last 10 ms are not seen), until ``count`` of them ended, the exporter exited or
    ``deadline`` (monotonic) passed."""
    started = time.monotonic()
    out = Watched()
    while time.monotonic() < deadline and exporter.poll() is None:
        for pid in children(exporter.pid):
            if pid not in out.peaks:
                out.order.append(pid)
                out.peaks[pid] = 0.0
            hwm = status(pid, "VmHWM")
            if hwm is not None:
                out.peaks[pid] = max(out.peaks[pid], hwm)
        for pid in out.order:
            if pid not in out.ended and not os.path.exists(f"/proc/{pid}"):
                out.ended[pid] = time.monotonic() - started
        if len(out.ended) >= count:
            break
        time.sleep(0.01)
    return out


def stop(exporter, timeout: float) -> str:
    """Terminate the exporter (killed after ``timeout`` seconds); its stderr."""
    exporter.terminate()
    try:
        _, err = exporter.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        exporter.kill()
        _, err = exporter.communicate()
    return err


def run_line(name: str, got: dict, extra: str = "") -> str:
    """One run's figures (``got``: :func:`run_exporter`'s), ``extra`` after the drift
    value."""
    failed = got["failed"]
    return (f"{name}: first {got['first']:.1f} MiB, drift "
            + " ".join(f"{d:.1f}" for d in got["drift"])
            + f" MiB, exporter {got['exporter']:.1f} MiB, dcnet_elb_drift {got['value']}"
            + extra + (f", {len(failed)} failed checks: {failed[0]}" if failed else ""))


def result(watched: Watched, checks: int, err: str) -> dict:
    """The first (loader) child's peak and the next ``checks`` drift children's, and the
    drift checks the exporter said failed; RuntimeError with its stderr when it ran
    fewer children."""
    order = watched.order
    if len(order) < checks + 1:
        raise RuntimeError(f"exporter ran {len(order)} children: {err[-2000:]}")
    return {"first": watched.peaks[order[0]],
            "drift": [watched.peaks[p] for p in order[1:checks + 1]],
            "failed": [line for line in err.splitlines() if "drift check failed" in line]}


def nft_setup(args, work: str, ns: str, model: str) -> list[str]:
    state = os.path.join(work, "nft-state")
    options = ["--nft-netns", ns, "--nft-state-dir", state]
    started = time.monotonic()
    subprocess.run([*ELBCTL, "apply", "-f", model, "--target", "nft", *options],
                   check=True, stdout=subprocess.DEVNULL)
    print(f"nft apply: {time.monotonic() - started:.1f} s", flush=True)
    if args.foreign_commit:         # the generation moves past the apply's record
        subprocess.run(["ip", "netns", "exec", ns, "nft", "add", "table", "inet", "foreign"],
                       check=True)
    return options


def haproxy_setup(args, work: str, ns: str, model: str):
    from dcnet.haproxy import daemon
    from dcnet.haproxy.paths import Paths
    from dcnet.model import load_model

    subprocess.run(["ip", "-n", ns, "route", "add", "local", "10.128.0.0/9", "dev", "lo"],
                   check=True)
    paths = Paths(run_dir=os.path.join(work, "haproxy"))
    started = time.monotonic()
    daemon.write_initial(load_model(model), paths)
    popen = daemon.start(paths, netns=ns, log_path=os.path.join(work, "haproxy.log"),
                         timeout=600)
    print(f"HAProxy started: {time.monotonic() - started:.1f} s", flush=True)
    return ["--haproxy-run-dir", paths.run_dir], popen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("nft", "haproxy"), required=True)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--servers", type=int, default=10)
    parser.add_argument("--forward", default="nat", help="the port's forward ('': the "
                        "model's default, dr)")
    parser.add_argument("--check", default=None, help="the services' health check type "
                        "(default: none for haproxy, the model's default for nft)")
    parser.add_argument("--checks", type=int, default=3)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--foreign-commit", action="store_true", help="nft: another "
                        "table added after the apply, so no plan may trust its record")
    parser.add_argument("--trees", default="", help="NAME=DIR,...: each row's dcnet tree")
    args = parser.parse_args()
    if args.check is None and args.target == "haproxy":
        args.check = "none"
    trees = dict(t.split("=", 1) for t in args.trees.split(",") if t) or {"this": None}
    print(f"{args.target}, {args.services} x {args.servers} ({args.forward or 'dr'}, check "
          f"{args.check or 'default'}), {args.checks} drift checks every {args.interval} s, "
          f"load {os.getloadavg()[0]:.1f} at {time.strftime('%H:%M:%S UTC', time.gmtime())}",
          flush=True)
    ns = f"dcnet-drift-{os.getpid()}"
    popen = None
    with tempfile.TemporaryDirectory(prefix="dcnet-drift-") as work:
        model = os.path.join(work, "model.yaml")
        with open(model, "w") as handle:
            handle.write(model_text(args.services, args.servers, args.forward or None,
                                      args.check))
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
            if args.target == "nft":
                options = nft_setup(args, work, ns, model)
            else:
                options, popen = haproxy_setup(args, work, ns, model)
            results: dict[str, list[dict]] = {}
            for _ in range(args.runs):
                for name, tree in trees.items():
                    got = run_exporter(args, model, options, tree)
                    results.setdefault(name, []).append(got)
                    print(run_line(name, got), flush=True)
        finally:
            if popen is not None:
                from dcnet.sysio import proc
                proc.stop(popen, 10.0)
            subprocess.run(["ip", "netns", "delete", ns], check=False)
    print(f"load {os.getloadavg()[0]:.1f} at {time.strftime('%H:%M:%S UTC', time.gmtime())}")
    for name, runs in results.items():
        drift = [d for r in runs for d in r["drift"]]
        print(f"{name}: medians: first child {statistics.median(r['first'] for r in runs):.1f}"
              f" MiB, drift child {statistics.median(drift):.1f} MiB (max {max(drift):.1f}), "
              f"exporter {statistics.median(r['exporter'] for r in runs):.1f} MiB")


if __name__ == "__main__":
    main()
