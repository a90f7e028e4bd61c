"""Benchmark (root): HAProxy changes under keep-alive AND new-connection clients (issue 14).

For each mode (``tcp``, ``http``) a namespace lab runs HAProxy over three HTTP/1.1
keep-alive real servers (bench/haproxy_peers.py, each logging the time of every request)
with two clients in the client namespace at once: persistent connections (peers client,
8 connections, a request every 5 ms each) and one request per new connection
(dcnet.lab.haproxy_loadgen, 1 thread, as fast as it goes). dcnet then does, one operation at a time:

- ``--reloads`` reloads (``elbctl apply``'s path, ``session.run`` in this process: plan +
  apply of a model needing one);
- ``--changes`` server changes (weight changes: the same path, runtime API);
- ``--removals`` cycles of ``elbctl backend remove SERVICE rsN --target haproxy`` (N
  rotating over the three), the real server STOPPED right after the command returns (as
  an init hook does), then restarted and ``backend add``-ed back;
- and a wait past ``hard_stop_after`` (the old workers' deadline).

Each failed request (either client) is attributed to an old worker's hard stop when it
falls within [-0.5, +2] s of a reload + ``hard_stop_after``, else to the operation whose
interval it falls in. Also: time from the start of ``backend remove`` to the last request the
removed server got, and from its return to that request (<= 0: nothing after).

    sudo .venv/bin/python bench/haproxy_keepalive.py [--reloads 10] [--changes 20]
                                                     [--removals 5]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

from dcnet.haproxy.paths import Paths
from dcnet.lab import haproxy_lab as hlab
from dcnet.lab.builder import Lab
from dcnet.model import load_model
from dcnet.target import session

PEERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "haproxy_peers.py")
RS = [hlab.server_address(i) for i in (1, 2, 3)]
PORT = 8081
DRAIN, HARD_STOP = 2, 8
HARD_STOPPED = "an old worker's hard-stop-after"
CONNECTIONS = 8


def model_data(mode: str, weight: int = 10, timeout_client: int = 60) -> dict:
    data = hlab.model_data({RS[0]: weight, RS[1]: 10, RS[2]: 10}, drain_deadline=DRAIN,
                           hard_stop_after=HARD_STOP, timeout_client=timeout_client)
    port = data["services"][0]["ports"][0]
    port["target_port"], port["mode"] = PORT, mode
    return data


class Run:
    """One mode's lab, clients and operations."""

    def __init__(self, lab, work: str, mode: str):
        self.lab, self.work, self.mode = lab, work, mode
        self.paths = Paths(run_dir=f"{work}/run")
        self.env = {**os.environ, "DCNET_HAPROXY_RUN_DIR": self.paths.run_dir}
        self.model_file = os.path.join(work, "model.yaml")
        self.logs = {a: os.path.join(work, f"rs{i}.log") for i, a in enumerate(RS, 1)}
        self.servers = {a: self.start_server(a) for a in RS}
        self.marks: list[tuple[float, str]] = []
        self.removal: list[tuple[float, float]] = []    # (from start, from return)
        self.reloaded: list[float] = []                 # when each reload was done

    def start_server(self, address: str):
        index = RS.index(address) + 1
        name = f"rs{index}-ka-{time.monotonic_ns()}"
        return self.lab.start(f"rs{index}", [sys.executable, PEERS, "server", str(PORT),
                                             address, self.logs[address]], name=name)

    def elbctl(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "dcnet.cli.elbctl", *args,
                               "--target", "haproxy"], env=self.env, capture_output=True,
                              text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"elbctl {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def apply(self, **kwargs) -> None:
        """``elbctl apply``'s path in this process (session.run: lock, plan, apply)."""
        data = model_data(self.mode, **kwargs)
        with open(self.model_file, "w") as handle:
            yaml.safe_dump(data, handle)
        outcome = session.run("haproxy", load_model(self.model_file),
                              {"run_dir": self.paths.run_dir}, apply=True)
        if not outcome.ok:
            raise RuntimeError(outcome.result.to_text())

    def mark(self, kind: str) -> None:
        self.marks.append((time.time(), kind))

    def remove_cycle(self, address: str) -> None:
        self.mark("removal")
        start = time.time()
        self.elbctl("backend", "remove", hlab.JOB, address)
        returned = time.time()
        self.servers[address].kill()            # stopped right after the hook returns
        self.servers[address].wait(10)
        with open(self.logs[address]) as handle:
            times = [float(line) for line in handle if line.strip()]
        last = max((t for t in times if t >= start), default=start)
        self.removal.append((last - start, last - returned))
        self.servers[address] = self.start_server(address)
        time.sleep(0.3)
        self.elbctl("backend", "add", hlab.JOB, address)

    def go(self, reloads: int, changes: int, removals: int) -> dict:
        hlab.start_haproxy(self.lab, hlab.model_of(model_data(self.mode)), self.paths)
        self.apply()
        out, stop = os.path.join(self.work, "ka.json"), os.path.join(self.work, "ka.stop")
        keepalive = self.lab.start("client", [
            sys.executable, PEERS, "client", f"{hlab.LB_ADDRESS}:{hlab.SERVICE_PORT}", out,
            stop, "--connections", str(CONNECTIONS), "--interval", "0.005"],
            name=f"ka-{self.mode}")
        fresh = hlab.LoadRun(self.lab, self.work, f"{hlab.LB_ADDRESS}:{hlab.SERVICE_PORT}",
                             name=f"new-{self.mode}", concurrency=1)
        time.sleep(1)
        for i in range(reloads):
            self.mark("reload")
            self.apply(timeout_client=61 + i)
            self.reloaded.append(time.time())
            time.sleep(0.3)
        for i in range(changes):
            self.mark("server change")
            self.apply(weight=11 + i % 2, timeout_client=60 + reloads)
            time.sleep(0.05)
        for i in range(removals):
            # rotate: keep-alive connections cut from one server reconnect to the others,
            # so the next removal meets some
            self.remove_cycle(RS[(2 + i) % len(RS)])
            time.sleep(0.3)
        self.mark(f"wait past hard-stop-after ({HARD_STOP} s)")
        time.sleep(HARD_STOP + 2)
        self.mark("end")
        with open(stop, "w") as handle:
            handle.write("stop\n")
        keepalive.wait(30)
        with open(out) as handle:
            ka = json.load(handle)
        new = fresh.stop()
        return {"keepalive": ka, "new": new,
                "failed_ka": self.attribute([t for t, _ in ka["failures"]]),
                "failed_new": self.attribute(new["failure_times"]),
                "reasons_ka": sorted({r for _, r in ka["failures"]}),
                "removal": self.removal}

    def attribute(self, failures: list[float]) -> dict[str, int]:
        starts = [t for t, _ in self.marks]
        stops = [t + HARD_STOP for t in self.reloaded]
        out: dict[str, int] = {kind: 0 for _, kind in self.marks if kind != "end"}
        out[HARD_STOPPED] = 0
        for t in failures:
            if any(-0.5 <= t - stop <= 2.0 for stop in stops):
                out[HARD_STOPPED] += 1
                continue
            index = bisect.bisect_right(starts, t) - 1
            kind = self.marks[index][1] if index >= 0 else "before"
            out[kind] = out.get(kind, 0) + 1
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--removals", type=int, default=5)
    args = parser.parse_args()
    results = {}
    for mode in ("tcp", "http"):
        work = tempfile.mkdtemp(prefix=f"dcnet-ka-{mode}-")
        try:
            with Lab(hlab.topology(3)) as lab:
                results[mode] = Run(lab, work, mode).go(args.reloads, args.changes,
                                                        args.removals)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"HAProxy under keep-alive + new-connection clients; {args.reloads} reloads, "
          f"{args.changes} server changes, {args.removals} removals (server stopped when "
          f"the hook returns), drain_deadline {DRAIN} s, hard_stop_after {HARD_STOP} s")
    for mode, r in results.items():
        print(f"\nmode {mode}: keep-alive {r['keepalive']['ok']} ok, new-connection "
              f"{r['new']['ok']} ok; keep-alive failure reasons: {r['reasons_ka'] or '-'}")
        print(f"  {'failed requests during':40}{'keep-alive':>12}{'new-conn':>10}")
        for kind in r["failed_ka"]:
            print(f"  {kind:40}{r['failed_ka'][kind]:>12}{r['failed_new'].get(kind, 0):>10}")
        starts = [a for a, _ in r["removal"]]
        returns = [b for _, b in r["removal"]]
        print(f"  last request on the removed server: median {statistics.median(starts):.2f} s"
              f" after 'backend remove' started, {statistics.median(returns):+.2f} s from its"
              f" return (max {max(returns):+.2f} s)")


if __name__ == "__main__":
    main()
