"""Benchmark: ``elbctl backend remove`` on real IPVS under load, and the rolling restart
under dcnet-init behind LVS, with and without the hooks.

    .venv/bin/python bench/lvs_drain.py [--rounds 6] [--no-rolling] [--no-contrast]

Where the host kernel lacks IPVS the script re-runs itself inside the kernel lab (one
virtme-ng boot, dcnet.lab.kernel_lab.run_in_guest) and prints the guest's report.
Emulation makes absolute times large; they are stated as measured in the guest.

1. ``remove``: the LVS lab (dcnet.lab.lvs_lab: three busybox httpd real servers behind
   the NAT VIPs) under new-connection load from both carrier clients (a curl loop each,
   one connection per request, every request's start time logged). Each round removes
   one server in-process (``drain_backend(..., "remove")``, what ``elbctl backend
   remove`` runs: weight 0, wait until no active connection, delete), then adds it
   back. Printed: the time from the start of the remove to weight 0 written (from then
   IPVS schedules no new connection to it: the bound on "remove -> last new connection"),
   the drain wait (weight 0 -> safe), the whole remove, medians and maxima; the requests
   the removed server answered that started later than weight 0 + SLACK (the logged
   start precedes curl's fork, by seconds under emulation; expected 0); failed requests.
2. ``rolling``: dcnet.lab.init_lvs_lab.rolling_restart of three instances with the hooks
   (SIGTERM to dcnet-init) and without (the app killed, no hooks): requests ok / failed
   of each kind (new-connection, keep-alive: the instances are keep-alive apps, see
   dcnet.lab.keepalive_app) and seconds per instance.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SLACK = 3.0       # seconds a logged request start may precede its connection (emulation)


def _lab(docroot: str, with_servers: bool):
    from dcnet.lab import init_lvs_lab as ilab
    from dcnet.lab import lvs_lab as lvslab
    from dcnet.lab.builder import Lab

    busybox = shutil.which("busybox") or "/bin/busybox"
    topo = lvslab.topology(busybox, docroot) if with_servers else ilab.topology(busybox,
                                                                                 docroot)
    return Lab(topo)


def _prepare(lab, state_dir: str) -> None:
    import subprocess

    from dcnet.lab import init_lvs_lab as ilab
    from dcnet.lvs.backend import LVSTarget
    from dcnet.target import apply_plan, make_plan

    subprocess.run(["ip", "-n", lab.netns("director"), "link", "add", "elb0", "up", "type",
                    "dummy"], check=True)
    target = LVSTarget(netns=lab.netns("director"), state_dir=state_dir)
    with target.lock(600):
        result = apply_plan(target, make_plan(target, ilab.model()))
    target.close()
    if not result.ok:
        raise SystemExit(result.to_text())


def removals(rounds: int) -> None:
    from dcnet.lab import init_lvs_lab as ilab
    from dcnet.lab import lvs_lab as lvslab
    from dcnet.lvs.dynamic import change_backend, drain_backend
    from dcnet.lvs.ipvs import KernelIPVS
    from dcnet.lvs.store import Store

    docroot, work = tempfile.mkdtemp(prefix="bench-www-"), tempfile.mkdtemp(prefix="bench-")
    lvslab.write_docroots(docroot)
    state_dir = os.path.join(work, "state")
    with _lab(docroot, True) as lab:
        _prepare(lab, state_dir)
        stop = os.path.join(work, "stop")
        outs = []
        for carrier, vip in ilab.VIP.items():
            out = os.path.join(work, f"load-{carrier}.out")
            lab.start(f"cli-{carrier}", ilab.load_loop(f"http://{vip}/id", stop),
                      name=f"load-{carrier}", log_path=out)
            outs.append(out)
        time.sleep(5)
        ipvs = KernelIPVS(lab.netns("director"))
        store = Store(state_dir)
        marks = []
        for r in range(rounds):
            i = r % len(lvslab.SERVERS)
            address = lvslab.SERVERS[i]
            t0 = time.time()
            result = drain_backend(store, ipvs, "remove", lvslab.JOB_NAT, address)
            t1 = time.time()
            time.sleep(9)                       # requests after the removal, if any
            t2 = time.time()
            change_backend(store, ipvs, "add", lvslab.JOB_NAT, address,
                           weight=lvslab.WEIGHTS[i])
            marks.append((f"rs{i + 1}", t0, t1, t2, result.outcome.waited,
                          result.outcome.state, result.quiesced_after))
            time.sleep(3)
        ipvs.close()
        with open(stop, "w") as fh:
            fh.write("stop\n")
        for r in ("load-telecom", "load-unicom"):
            lab.process(r).wait(600)
        requests = [req for out in outs for req in ilab.parse_load(ilab.read_text(out))]
    failed = [r for r in requests if r[2] != "200"]
    quiesce, waits, totals, late = [], [], [], 0
    for host, t0, t1, t2, waited, state, quiesced in marks:
        # requests the removed server answered that started after weight 0 was written,
        # plus SLACK (a request's start time is taken before curl is forked: under
        # emulation that is up to seconds early)
        after = [t for t, body, code in requests
                 if body == host and t0 + quiesced + SLACK < t < t2 - SLACK]
        late += len(after)
        quiesce.append(quiesced)
        waits.append(waited)
        totals.append(t1 - t0)
        print(f"remove {host}: {state}, weight 0 after {quiesced:.2f}s, drain wait "
              f"{waited:.2f}s, remove {t1 - t0:.2f}s, requests answered after weight 0: "
              f"{len(after)}")
    print(f"requests: {len(requests)}, failed: {len(failed)} {failed[:5]}")
    print(f"remove start -> weight 0 (no new connection scheduled to it after): median "
          f"{statistics.median(quiesce):.2f}s, max {max(quiesce):.2f}s; requests the "
          f"removed server answered that started later (+{SLACK:g}s): {late}")
    print(f"drain wait (weight 0 -> safe): median {statistics.median(waits):.2f}s, "
          f"max {max(waits):.2f}s")
    print(f"backend remove (drain, wait, delete): median {statistics.median(totals):.2f}s, "
          f"max {max(totals):.2f}s")
    shutil.rmtree(docroot, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)


def rolling(hooks: bool) -> None:
    from dcnet.lab import init_lvs_lab as ilab
    from dcnet.lab import lvs_lab as lvslab

    docroot, work = tempfile.mkdtemp(prefix="bench-www-"), tempfile.mkdtemp(prefix="bench-")
    lvslab.write_docroots(docroot)
    state_dir = os.path.join(work, "state")
    with _lab(docroot, False) as lab:
        _prepare(lab, state_dir)
        result = ilab.rolling_restart(lab, work, state_dir, hooks=hooks,
                                      concurrent_applies=hooks)
    per = result.per_instance
    print(f"rolling restart {'with' if hooks else 'WITHOUT'} hooks: {result.summary()}; "
          f"failed {len(result.failed)} {result.failed[:5]}, per instance median "
          f"{statistics.median(per):.1f}s max {max(per):.1f}s, full applies "
          f"{result.applies} ({len(result.apply_failures)} failed)")
    shutil.rmtree(docroot, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--no-rolling", action="store_true")
    parser.add_argument("--no-contrast", action="store_true",
                        help="Skip the rolling restart without hooks.")
    parser.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from dcnet.lab import kernel_lab

    if args.in_guest or kernel_lab.host_has_modules(["ip_vs"]):
        if args.rounds:
            removals(args.rounds)
        if not args.no_rolling:
            rolling(True)
            if not args.no_contrast:
                rolling(False)
        return
    out = tempfile.mkdtemp(prefix="lvs-drain-bench-")
    argv = [sys.executable, os.path.abspath(__file__), "--in-guest", "--rounds",
            str(args.rounds), *(["--no-rolling"] if args.no_rolling else []),
            *(["--no-contrast"] if args.no_contrast else [])]
    print(f"host kernel has no IPVS: running in the kernel lab (log {out}/guest-console.log)",
          flush=True)
    run = kernel_lab.run_in_guest(argv, rwdirs=[out], memory="2G", timeout=5400,
                                  env={"PYTHONUNBUFFERED": "1", "HOME": "/root",
                                       "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                                  cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(run.log_tail(40))
    print(f"guest run: {run.seconds:.0f}s wall, exit {run.returncode}")
    sys.exit(0 if run.ok else 1)


if __name__ == "__main__":
    main()
