"""Benchmark: a rolling restart behind HAProxy with and without dcnet-init's ELB hooks.

Builds the HAProxy lab (client, lb, 3 real-server namespaces), runs the instances under
dcnet-init with the hooks (register when healthy, drain on SIGTERM, remove after exit)
or, for contrast, without them (each app killed directly and started again), with a
keep-alive client (4 persistent connections) and a new-connection load generator running
throughout and full ``elbctl apply`` runs in a loop. Prints failed requests per client
kind, requests served, the time per instance (stop to the new instance serving) and
the machine's 1-minute load average at the end of the run.

    sudo .venv/bin/python bench/init_rolling.py [--runs 1] [--instances 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile

from dcnet.lab import haproxy_lab as hlab
from dcnet.lab.builder import Lab
from dcnet.lab.init_lab import rolling_restart


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--instances", type=int, default=3)
    args = parser.parse_args()
    print(f"{'side':<10} {'run':>3} {'keep-alive ok/failed':>22} {'new-conn ok/failed':>20} "
          f"{'per instance (median)':>22} {'applies':>8} {'load avg (1 min)':>17}")
    for run in range(args.runs):
        for hooks in (True, False):
            workdir = tempfile.mkdtemp(prefix="dcnet-init-bench-")
            try:
                with Lab(hlab.topology(args.instances)) as lab:
                    r = rolling_restart(lab, workdir, args.instances, hooks=hooks)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            ka, nc = r.keepalive, r.new_connections
            print(f"{'hooks' if hooks else 'no hooks':<10} {run:>3} "
                  f"{ka['ok']:>14}/{len(ka['failures']):<7} {nc['ok']:>12}/{nc['failed']:<7} "
                  f"{statistics.median(r.per_instance):>19.2f} s {r.applies:>8} "
                  f"{os.getloadavg()[0]:>17.1f}")
            reasons = {}
            for failure in ka["failures"]:
                reason = str(failure[-1] if isinstance(failure, list | tuple) else failure)
                reasons[reason[:60]] = reasons.get(reason[:60], 0) + 1
            if reasons or nc["failed"]:
                print(f"    keep-alive failures: {reasons}; new-connection: {nc['reasons']}")
            if r.apply_failures:
                print(f"    {len(r.apply_failures)} apply(s) failed: {r.apply_failures[0][-300:]}")


if __name__ == "__main__":
    main()
