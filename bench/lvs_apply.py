"""Benchmark: elbctl's IPVS apply against ``ipvsadm-restore`` of the same table.

    .venv/bin/python bench/lvs_apply.py [--services 10000 ...] [--servers 10] [--runs 3]
                                        [--quick]

Where the host kernel lacks IPVS the script re-runs itself inside the kernel lab (one
virtme-ng boot, dcnet.lab.kernel_lab.run_in_guest) and prints the guest's report; under
emulation absolute times mean little, so it prints medians and RATIOS measured in the
same boot. Each run, in a fresh network namespace:

1. ``full``: elbctl plan + apply from an empty table (batched netlink);
2. ``no-op``: the same again (must write nothing): the table and the model match the
   fingerprint the full apply recorded, so IPVS is not parsed, dumped or diffed;
3. ``no-op no-fp``: the same with the fingerprint record removed first: the full read
   (one read of /proc/net/ip_vs, one service dump) every no-op did before;
4. ``no-op exact``: the same with ``--exact-read`` (one dest dump per service);
5. ``one``: one service changed (a weight and the scheduler): the incremental sync
   reads and writes only that service (:mod:`dcnet.lvs.incremental`);
6. ``one full``: the same change back, with the whole table read (``full_read``: what
   every one-service change cost before the incremental sync);
7. ``restore``: ``ipvsadm -C`` then ``ipvsadm-restore`` of the same table (the C tool,
   one acknowledged request per line).

``--quick`` leaves out 3, 4 and 7. Several ``--services`` sizes run in the same boot,
one after the other, each with its own medians and ratios.

Only IPVS is measured on both sides (VIP addresses, rules and sysctls are left out:
ipvsadm-restore does not do them). Every elbctl sync is ``make_plan`` then
``apply_plan`` on the ``lvs`` target under its lock, what ``elbctl apply --target lvs``
runs after loading the model (here built from the model's types, not parsed).
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


def model_for(services: int, servers: int, changed: bool = False):
    """A Model of ``services`` services (one VIP, tcp/80 -> 8080 NAT, ``servers`` real
    servers each), built from the model's own types: what ``elbctl apply`` holds once
    it has loaded a model file (loading is not measured here; bench/model_load.py
    does that). ``changed``: the first service's scheduler and first weight differ."""
    import ipaddress

    from dcnet.model.jobname import JobName
    from dcnet.model.types import Carrier, Forwarding, Model, Port, Protocol, RealServer, Service

    carrier = Carrier("lab", "up0", ipaddress.ip_address("192.0.2.1"), 101,
                      (ipaddress.ip_network("10.0.0.0/8"),), default=True)
    out = []
    for i in range(services):
        vip = ipaddress.ip_address(f"10.{i // 250 % 250}.{i % 250}.1")
        sched = "rr" if changed and i == 0 else "wrr"
        port = Port(80, Protocol.TCP, sched, Forwarding.NAT, 0, 8080)
        reals = tuple(RealServer(ipaddress.ip_address(
            f"172.16.{(i * servers + j) // 250 % 250}.{(i * servers + j) % 250 + 1}"),
            5 if changed and i == 0 and j == 0 else j + 1) for j in range(servers))
        job = JobName(f"j{i}", f"s{i}", f"c{i % 50}", f"p{i % 10}", "o", "bench")
        out.append(Service(job, (("lab", vip),), (port,), reals))
    return Model("bench", (carrier,), tuple(out))


def elbctl_sync(table, store_dir: str, model, exact_read: bool = False,
                full_read: bool = False) -> tuple[float, int, int, dict, str]:
    """One sync exactly as ``elbctl apply --target lvs`` runs it once the model is
    loaded: under the target's lock, :func:`dcnet.target.make_plan` then
    :func:`dcnet.target.apply_plan` on an :class:`LVSTarget` (IPVS only: no routing
    object, as ipvsadm-restore does no routing). Returns (seconds, changes, IPVS writes,
    seconds per phase, the read the plan took)."""
    from dcnet.lvs.backend import LVSTarget
    from dcnet.target import apply_plan, make_plan

    started = time.perf_counter()
    target = LVSTarget(state_dir=store_dir, exact_read=exact_read, full_read=full_read,
                       ipvs=table, routing=None)
    with target.lock(600):
        plan = make_plan(target, model)
        planned = time.perf_counter()
        result = apply_plan(target, plan)
    elapsed = time.perf_counter() - started
    phases = {"plan": planned - started, "apply": elapsed - (planned - started)}
    if not result.ok:
        raise SystemExit(f"apply failed: {result.to_text()[-2000:]}")
    payload = plan.payload
    path = ("fingerprint fast path" if payload.fast_path else "full read"
            if payload.incremental is None else
            f"incremental: {len(payload.incremental)} service(s) read")
    return elapsed, len(plan.changes), result.writes["ipvs"], phases, path


def restore_text(desired: dict) -> str:
    lines = []
    for (kind, key), attrs in desired.items():
        if kind == "service":
            lines.append(f"-A -t {key[1]}:{key[2]} -s {attrs['scheduler']}")
    for (kind, key), attrs in desired.items():
        if kind == "dest":
            lines.append(f"-a -t {key[1]}:{key[2]} -r {key[3]}:{key[4]} -m -w {attrs['weight']}")
    return "\n".join(lines) + "\n"


def in_namespace(args) -> None:
    for services in args.services:
        one_size(args, services)


def one_size(args, services: int) -> None:
    from dcnet.lvs import state
    from dcnet.lvs.ipvs import KernelIPVS
    from dcnet.lvs.layout import layouts
    from dcnet.lvs.store import Store

    base_model = model_for(services, args.servers)
    changed_model = model_for(services, args.servers, changed=True)
    base = state.desired_ipvs(layouts(base_model))
    restore = restore_text(base)
    n_dests = sum(1 for k in base if k[0] == "dest")
    print(f"table: {services} services x {args.servers} real servers = "
          f"{services + n_dests} IPVS objects; {args.runs} run(s)", flush=True)
    steps = [("full", base_model, False, False), ("no-op", base_model, False, False),
             ("no-op no-fp", base_model, False, False),
             ("no-op exact", base_model, True, False), ("one", changed_model, False, False),
             ("one full", base_model, False, True)]
    if args.quick:
        steps = [s for s in steps if s[0] not in ("no-op no-fp", "no-op exact")]
    times: dict[str, list[float]] = {s[0]: [] for s in steps}
    if not args.quick:
        times["restore"] = []
    writes: dict[str, int] = {}
    for run in range(args.runs):
        name = f"lvsbench-{os.getpid()}-{run}"
        # iproute2 makes the namespace; lo up gives it a local table (IPVS refuses IPv4
        # dests with EINVAL in a namespace without one)
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        try:
            table = KernelIPVS(name)
            with tempfile.TemporaryDirectory() as store:
                for label, model, exact, full in steps:
                    if label == "no-op no-fp":      # the full read: what no-op did before
                        Store(store).save_fingerprint(None)
                    seconds, changes, w, phases, path = elbctl_sync(table, store, model,
                                                                    exact, full)
                    times[label].append(seconds)
                    writes[label] = w
                    split = ", ".join(f"{k} {v:.2f}" for k, v in phases.items())
                    print(f"  run {run + 1}: {label:<11} {seconds:8.2f}s  {changes} change(s), "
                          f"{w} netlink write(s)  ({split}; {path})", flush=True)
            table.close()
            if args.quick:
                continue
            subprocess.run(["ip", "netns", "exec", name, "ipvsadm", "-C"], check=True)
            started = time.perf_counter()
            subprocess.run(["ip", "netns", "exec", name, "ipvsadm-restore"], input=restore,
                           text=True, check=True)
            times["restore"].append(time.perf_counter() - started)
            print(f"  run {run + 1}: restore {times['restore'][-1]:8.2f}s  "
                  f"ipvsadm-restore of {len(restore.splitlines())} lines", flush=True)
        finally:
            subprocess.run(["ip", "netns", "del", name], check=False)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{services} services, medians: " + ", ".join(f"{k} {v:.2f}s" for k, v in med.items()))
    if "restore" in med:
        print(f"ratio full apply / ipvsadm-restore: {med['full'] / med['restore']:.2f} "
              f"(target <= 1.0)")
    print(f"ratio no-op / full apply:           {med['no-op'] / med['full']:.3f} "
          f"(target < 0.05); no-op writes: {writes['no-op']}")
    for label, name in (("no-op no-fp", "no-op full read"), ("no-op exact", "no-op --exact-read"),
                        ("one", "one-service change"), ("one full", "one, full read")):
        if label in med:
            print(f"ratio {name + ' / full:':<29}{med[label] / med['full']:.3f}; "
                  f"writes: {writes[label]}")
    print(f"ratio one / one full read:          {med['one'] / med['one full']:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, nargs="+", default=[10000])
    parser.add_argument("--servers", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="leave out the no-op full reads and ipvsadm-restore")
    parser.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from dcnet.lab import kernel_lab

    if args.in_guest or kernel_lab.host_has_modules(["ip_vs"]):
        in_namespace(args)
        return
    out = tempfile.mkdtemp(prefix="lvs-bench-")
    argv = [sys.executable, os.path.abspath(__file__), "--in-guest", "--services",
            *map(str, args.services), "--servers", str(args.servers), "--runs", str(args.runs),
            *(["--quick"] if args.quick else [])]
    print(f"host kernel has no IPVS: running in the kernel lab (log {out}/guest-console.log)",
          flush=True)
    run = kernel_lab.run_in_guest(argv, rwdirs=[out], memory="3G", timeout=5400,
                                  env={"PYTHONUNBUFFERED": "1", "HOME": "/root",
                                       "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                                  cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(run.log_tail(40))
    print(f"guest run: {run.seconds:.0f}s wall, exit {run.returncode}")
    sys.exit(0 if run.ok else 1)


if __name__ == "__main__":
    main()
