"""Benchmark: the peak of ``elbctl exporter``'s drift-check children against a live LVS
director (real IPVS, in the kernel lab), at 10,000 services x 10 real servers.

    .venv/bin/python bench/drift_child_lvs.py [--services 10000] [--servers 10]
        [--checks 3] [--interval 20] [--runs 1] [--trees before=DIR,after=.]
        [--memory 3G] [--probe]

Where the host kernel lacks IPVS the script re-runs itself inside the kernel lab (one
virtme-ng boot, :func:`dcnet.lab.kernel_lab.run_in_guest`, as bench/metrics_ipvs.py
does) and prints the guest's report. A tree given in ``--trees`` must be readable in the
guest (the host's root is shared read-only, but the guest's ``/tmp`` and ``/var`` are its
own: put a baseline worktree beside the checkout, e.g. ``git worktree add
../lvs-drift-base REV``). Under emulation absolute times mean little; memory peaks are
what this measures.

In the guest: a network namespace with the VIP interface ``elb0`` and the carrier
uplink ``bgp0`` (dummy devices, the uplink on the gateway's subnet) is put at
bench/metrics_scrape.py's model (DR, the model's default: one carrier, ``--servers``
real servers a service) by one ``elbctl apply --target lvs --lvs-netns NS
--lvs-state-dir DIR`` (IPVS services and dests, a rule and an address per VIP, the
carrier route, sysctls; its clean apply records the fingerprint and the per-service
record the exporter's plans then find, as on a director). Then, per source tree and
run, interleaved, the real ``elbctl exporter -f MODEL --target lvs`` with the same
options and ``--drift-interval INTERVAL`` (dcnet from that tree through
``PYTHONPATH``): its children are found every 10 ms and their VmHWM read
(bench/drift_child.py's way; a lower bound of each peak) until it has run its first
(loader) child and ``--checks`` drift checks; the exporter's own VmHWM is read, then
``dcnet_elb_drift`` scraped (0: no drift, as it must be at the model). Prints each
run's figures and per tree the medians; the namespace is removed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, ROOT)
sys.path.insert(0, BENCH)

ELBCTL = [sys.executable, "-m", "dcnet.cli.elbctl"]
CHILD_SECONDS = 900      # longest wait for one child under emulation (never measured)


def stamp() -> str:
    return f"load {os.getloadavg()[0]:.2f} at {time.strftime('%H:%M:%S UTC', time.gmtime())}"


def director(ns: str) -> None:
    """The namespace's devices: lo, the VIP interface and the carrier's uplink."""
    for argv in (["link", "set", "lo", "up"],
                 ["link", "add", "elb0", "type", "dummy"], ["link", "set", "elb0", "up"],
                 ["link", "add", "bgp0", "type", "dummy"], ["link", "set", "bgp0", "up"],
                 ["addr", "add", "203.0.113.2/24", "dev", "bgp0"]):
        subprocess.run(["ip", "-n", ns, *argv], check=True)


def run_exporter(args, model: str, options: list[str], tree: str | None) -> dict:
    from drift_child import (  # bench/ sibling
        drift_value,
        result,
        start_exporter,
        status,
        stop,
        watch_children,
    )

    started = time.monotonic()
    exporter, port = start_exporter("lvs", model, options, args.interval, tree)
    try:
        watched = watch_children(exporter, args.checks + 1, started + (args.checks + 1)
                                 * (args.interval + CHILD_SECONDS))
        own = status(exporter.pid, "VmHWM")        # before the scrape adds its own
        value = None
        for _ in range(3):
            value = drift_value(port, "lvs")
            if value is not None:
                break
            time.sleep(5)
    finally:
        err = stop(exporter, 60)
    return {**result(watched, args.checks, err), "exporter": own, "value": value,
            "ended": [watched.ended.get(p, 0.0) for p in watched.order[:args.checks + 1]]}


PROBE = """import os, sys, time
def mib(field):
    with open("/proc/self/status") as handle:
        return next(int(l.split()[1]) / 1024 for l in handle if l.startswith(field))
def step(name):
    print(f"  {name:<44} VmRSS {mib('VmRSS:'):6.1f} VmHWM {mib('VmHWM:'):6.1f} MiB", flush=True)
model_path, ns, state_dir = sys.argv[1:4]
step("interpreter")
from dcnet.model import load_model, pieces as model_pieces
from dcnet.target import registry, session  # noqa: F401
from dcnet.lvs.backend import LVSTarget
step("imports (dcnet.lvs.backend, session, model)")
packed = model_pieces.pack(load_model(model_path))
step("model loaded and packed (freed)")
pieces = model_pieces.Pieces(packed)
model = pieces.whole()
step("pieces.whole() (the drift child's model)")
target = LVSTarget(netns=ns, state_dir=state_dir)
target.routing.settings = model.lvs
import pyroute2  # noqa: F401
step("import pyroute2")
read = target.routing.read([c.table for c in model.carriers], (), [])
step(f"routing read ({len(read.state)} objects)")
read = None
text = target.ipvs.proc_text()
step(f"/proc/net/ip_vs read ({len(text) / 2**20:.1f} MiB)")
from dcnet.lvs import fingerprint
fingerprint.table_digest(text)
text = None
step("its digest (masked)")
started = time.process_time()
plan = target.plan(model)
step(f"plan: {len(plan.changes)} changes, {time.process_time() - started:.1f} CPU s")
"""


def probe(model: str, ns: str, state_dir: str, tree: str | None) -> None:
    """Where a drift child's memory goes, step by step, in a fresh interpreter."""
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = os.path.abspath(tree)
    print(f"probe ({tree or 'this tree'}):", flush=True)
    subprocess.run([sys.executable, "-c", PROBE, model, ns, state_dir], env=env,
                   cwd=os.path.abspath(tree) if tree else None, check=False)


def in_guest(args) -> None:
    from drift_child import run_line  # bench/ sibling
    from metrics_scrape import model_text

    trees = dict(t.split("=", 1) for t in args.trees.split(",") if t) or {"this": None}
    print(f"lvs, {args.services} x {args.servers} (dr), {args.checks} drift checks every "
          f"{args.interval} s, trees {trees}; guest {os.cpu_count()} CPUs, {stamp()}",
          flush=True)
    missing = [tree for tree in trees.values() if tree and not os.path.isdir(tree)]
    if missing:
        raise SystemExit(f"not in the guest: {', '.join(missing)}")
    ns = f"dcnet-ldrift-{os.getpid()}"
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="dcnet-ldrift-") as work:
        model = os.path.join(work, "model.yaml")
        with open(model, "w") as handle:
            handle.write(model_text(args.services, args.servers))
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            director(ns)
            options = ["--lvs-netns", ns, "--lvs-state-dir", os.path.join(work, "lvs-state")]
            started = time.monotonic()
            subprocess.run([*ELBCTL, "apply", "-f", model, "--target", "lvs", *options],
                           check=True, stdout=subprocess.DEVNULL)
            print(f"elbctl apply --target lvs: {time.monotonic() - started:.0f} s, {stamp()}",
                  flush=True)
            if args.probe:
                for tree in trees.values():
                    probe(model, ns, options[3], tree)
            for _ in range(args.runs):
                for name, tree in trees.items():
                    got = run_exporter(args, model, options, tree)
                    results.setdefault(name, []).append(got)
                    ended = " ".join(f"{s:.0f}" for s in got["ended"])
                    print(run_line(name, got, f", children ended at {ended} s")
                          + f"; {stamp()}", flush=True)
        finally:
            subprocess.run(["ip", "netns", "delete", ns], check=False)
    print(stamp())
    for name, runs in results.items():
        drift = [d for r in runs for d in r["drift"]]
        print(f"{name}: medians: first child {statistics.median(r['first'] for r in runs):.1f}"
              f" MiB, drift child {statistics.median(drift):.1f} MiB (max {max(drift):.1f}), "
              f"exporter {statistics.median(r['exporter'] for r in runs):.1f} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--servers", type=int, default=10)
    parser.add_argument("--checks", type=int, default=3)
    parser.add_argument("--interval", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--trees", default="", help="NAME=DIR,...: each row's dcnet tree")
    parser.add_argument("--memory", default="3G", help="the guest's memory")
    parser.add_argument("--probe", action="store_true", help="first, per tree: a drift "
                        "child's steps (imports, model, routing read, /proc read, plan) "
                        "in a fresh interpreter, VmRSS and VmHWM after each")
    parser.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from dcnet.lab import kernel_lab

    if args.in_guest or kernel_lab.host_has_modules(["ip_vs", "dummy"]):
        in_guest(args)
        return
    out = tempfile.mkdtemp(prefix="drift-lvs-bench-")
    argv = [sys.executable, os.path.abspath(__file__), "--in-guest", "--services",
            str(args.services), "--servers", str(args.servers), "--checks", str(args.checks),
            "--interval", str(args.interval), "--runs", str(args.runs), "--trees", args.trees,
            *(["--probe"] if args.probe else [])]
    print(f"host {stamp()}; host kernel has no IPVS: running in the kernel lab (log "
          f"{out}/guest-console.log)", flush=True)
    run = kernel_lab.run_in_guest(argv, rwdirs=[out], memory=args.memory, timeout=7200,
                                  env={"PYTHONUNBUFFERED": "1", "HOME": "/root",
                                       "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                                  cwd=ROOT)
    print(run.log_tail(40))
    print(f"guest run: {run.seconds:.0f}s wall, exit {run.returncode}; host {stamp()}")
    sys.exit(0 if run.ok else 1)


if __name__ == "__main__":
    main()
