"""Benchmark (root): the cost of one runtime change vs one reload, and requests lost per
reload, on a real HAProxy in a namespace lab under load.

- one change: ``elbctl apply``'s work (plan + apply through the haproxy target) for a
  weight change, which goes through the runtime API, vs a settings change, which needs
  a reload (the baseline: tools that reload on every change, like marathon-lb and
  consul-template);
- requests lost per reload: the load generator runs in the lab's client while dcnet
  reloads through the master socket; the baseline restarts HAProxy (stop, start) the
  way a plain service restart does. Failures are attributed to the reload whose
  interval they fall in.

Prints medians and ratios side by side.

    sudo .venv/bin/python bench/haproxy_changes.py [--changes 20] [--reloads 10]
"""

from __future__ import annotations

import argparse
import bisect
import shutil
import statistics
import tempfile
import time

from dcnet.haproxy.backend import HAProxyTarget
from dcnet.haproxy.daemon import wait_ready
from dcnet.haproxy.paths import Paths
from dcnet.lab import haproxy_lab as hlab
from dcnet.lab.builder import Lab
from dcnet.sysio import proc
from dcnet.target import apply_plan, make_plan

RS = [hlab.server_address(i) for i in (1, 2)]


def apply(backend, **haproxy) -> float:
    weight = haproxy.pop("weight", 10)
    start = time.perf_counter()
    model = hlab.model_of(hlab.model_data({RS[0]: weight, RS[1]: 10}, **haproxy))
    with backend.lock(60):                 # as elbctl apply does it (session.run)
        result = apply_plan(backend, make_plan(backend, model))
    elapsed = time.perf_counter() - start
    assert result.ok, result.to_text()
    return elapsed


def per_reload(marks: list[float], failures: list[float]) -> list[int]:
    counts = [0] * len(marks)
    for t in failures:
        index = bisect.bisect_right(marks, t) - 1
        if index >= 0:
            counts[index] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--reloads", type=int, default=10)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="dcnet-hap-bench-")
    paths = Paths(run_dir=f"{work}/run")
    try:
        with Lab(hlab.topology(2)) as lab:
            popen = hlab.start_haproxy(lab, hlab.model_of(hlab.model_data(
                {RS[0]: 10, RS[1]: 10})), paths)
            backend = HAProxyTarget(run_dir=paths.run_dir, log=lambda text: None)
            runtime_times = [apply(backend, weight=11 + i % 2) for i in range(args.changes)]
            reload_times = [apply(backend, weight=12, timeout_client=61 + i)
                            for i in range(args.changes)]
            name = f"{hlab.JOB}:80"
            api_times, bare_reloads = [], []
            for i in range(args.changes):
                start = time.perf_counter()
                backend.runtime.set_server(name, "s1", weight=12 + i % 2)
                api_times.append(time.perf_counter() - start)
            backend.runtime.set_server(name, "s1", weight=12)
            for _ in range(args.changes):
                start = time.perf_counter()
                backend.runtime.reload()
                bare_reloads.append(time.perf_counter() - start)

            load = hlab.LoadRun(lab, work, f"{hlab.LB_ADDRESS}:80", name="dcnet")
            marks = []
            for i in range(args.reloads):
                marks.append(time.time())
                apply(backend, weight=12, timeout_client=200 + i)
                time.sleep(0.5)
            result = load.stop()
            ours = per_reload(marks, result["failure_times"])
            ours_ok = result["ok"]

            load = hlab.LoadRun(lab, work, f"{hlab.LB_ADDRESS}:80", name="restart")
            marks = []
            for i in range(args.reloads):
                marks.append(time.time())
                proc.stop(popen, 5.0)
                popen = lab.start("lb", paths.master_argv(), name=f"haproxy-restart-{i}")
                wait_ready(paths, popen)
                time.sleep(0.5)
            result = load.stop()
            base = per_reload(marks, result["failure_times"])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rt, rl = statistics.median(runtime_times), statistics.median(reload_times)
    lost, lost_base = statistics.median(ours), statistics.median(base)
    print(f"HAProxy changes on a real HAProxy in a lab; medians "
          f"({args.changes} changes, {args.reloads} reloads under load)")
    print(f"{'':40}{'dcnet':>14}{'baseline':>14}{'ratio':>9}")
    print(f"{'one server change (plan + apply)':40}{rt * 1000:>11.0f} ms{rl * 1000:>11.0f} ms"
          f"{rl / rt:>8.1f}x   (baseline: reload per change)")
    api, bare = statistics.median(api_times), statistics.median(bare_reloads)
    print(f"{'  of which: the socket command / reload':40}{api * 1000:>11.1f} ms"
          f"{bare * 1000:>11.0f} ms{bare / api:>8.0f}x   (set server weight vs master reload "
          "until the new worker runs)")
    print(f"{'requests lost per reload':40}{lost:>14g}{lost_base:>14g}"
          f"{'':>9}   (baseline: restart)")
    print(f"{'requests lost, all reloads':40}{sum(ours):>14}{sum(base):>14}"
          f"   ({ours_ok} requests answered during dcnet's reloads)")


if __name__ == "__main__":
    main()
