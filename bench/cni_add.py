"""Benchmark: dcnet CNI ADD/DEL against the reference Go ``bridge`` + ``host-local``.

Builds two node namespaces in one lab run (one for dcnet with its agent, one for the
reference plugins), creates pod namespaces, then for every pod runs ADD with each side
(interleaved, rotating the order, so all see the same machine load), then DEL; then a
burst of parallel ADDs per side. The sides:

- ``reference``: Go ``bridge`` + ``host-local`` (Debian containernetworking-plugins);
- ``shim``: dcnet as installed, the C shim served by the resident ``dcnet-agent``;
- ``fallback``: the same shim finding no agent socket, so it execs ``dcnet-python``
  (the whole plugin in a fresh interpreter: what runs when the agent is down);
- ``thin``: the shim's Python twin (``python -I -S``, ``_socket``/``posix`` only), to show
  what a pure-Python client would cost.

All are exec'd the same libcni-like way (``dcnet.lab.cni_invoke``: spawned from a thread
already inside the node namespace, so no ``ip netns exec`` sits in the measured time).
Prints median/p95 latency, the plugin process's CPU (wait4) and, for the sides the agent
serves, the agent's CPU per call; peak RSS per invocation (GNU time); burst wall time;
the ratios to the reference; start-up floors; the agent's peak RSS.

    sudo .venv/bin/python bench/cni_add.py [--pods 50] [--burst 50] [--python PY]

``--rolling-restart`` runs another scenario instead: a node's agent replaced under load
as a DaemonSet surge rollout does it (the new agent starts and stands by, the old one
gets SIGTERM while ``--burst`` ADDs, started over 0.4 s, run in parallel through the shim,
halfway through them); prints failed ADDs,
duplicate addresses, ADDs that went through the fallback, and ADD latency p50/p99.

Dual stack against IPv4 only (ADD/DEL medians and their ratio, shim and fallback) is
``bench/cni_add_dualstack.py``, which reuses this module's ``Side``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from dcnet.cni.install import install, installed_kind
from dcnet.lab.builder import Lab
from dcnet.lab.cni_invoke import CniRuntime, Execution, exec_plugin
from dcnet.sysio import netns

REF_DIR = "/usr/lib/cni"
TIME = "/usr/bin/time"
RSS_SAMPLES = 5


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


class Side:
    """One plugin under test: its runtime and the executions recorded per command."""

    def __init__(self, label: str, runtime: CniRuntime, tag: str, agent_pid: int = 0):
        self.label, self.runtime, self.tag = label, runtime, tag
        self.agent_pid = agent_pid  # the agent serving this side (its CPU is counted)
        self.runs: dict[str, list[Execution]] = {"ADD": [], "DEL": []}
        self.rss: dict[str, list[int]] = {"ADD": [], "DEL": []}
        self.agent_cpu: dict[str, float] = {"ADD": 0.0, "DEL": 0.0}
        self.pods: list[str] = []

    def call(self, command: str, container_id: str, pod_path: str,
             record: bool = True) -> Execution:
        rt = self.runtime
        plugin = rt.conflist["plugins"][0]
        container_id = f"{self.tag}-{container_id}"  # the dcnet sides share one node
        env = rt.env(command, container_id, pod_path, "eth0")
        conf = rt.plugin_conf(plugin, None, None)
        before = process_cpu(self.agent_pid) if record and self.agent_pid else 0.0
        done = exec_plugin(rt.find(plugin["type"]), env, json.dumps(conf), rt.node_netns)
        if done.rc != 0:
            raise RuntimeError(f"{self.label} {command} {container_id}: {done.stdout} "
                               f"{done.stderr}")
        if record:
            self.runs[command].append(done)
            if self.agent_pid:
                self.agent_cpu[command] += process_cpu(self.agent_pid) - before
        if command == "DEL" and self.agent_pid:
            settle(rt.node_netns)  # the reaper's deletion must not slow the next call
        return done

    def peak_rss(self, command: str, container_id: str, pod_path: str) -> int:
        """Peak RSS (KiB) of one invocation, measured by GNU time around the plugin
        (wait4 from this big process would report this process's own peak)."""
        rt = self.runtime
        plugin = rt.conflist["plugins"][0]
        container_id = f"{self.tag}-{container_id}"  # the dcnet sides share one node
        env = rt.env(command, container_id, pod_path, "eth0")
        conf = rt.plugin_conf(plugin, None, None)
        with tempfile.NamedTemporaryFile("r") as out:
            done = exec_plugin(rt.find(plugin["type"]), env, json.dumps(conf), rt.node_netns,
                               wrapper=[TIME, "-f", "%M", "-o", out.name])
            if done.rc != 0:
                raise RuntimeError(f"{self.label} {command}: {done.stdout} {done.stderr}")
            return int(out.read().split()[-1])

    def stats(self, command: str) -> dict:
        runs = self.runs[command]
        ms = [r.seconds * 1000 for r in runs]
        return {"n": len(ms), "median_ms": statistics.median(ms),
                "p95_ms": percentile(ms, 95),
                "cpu_ms": statistics.median(r.cpu_seconds * 1000 for r in runs),
                "agent_cpu_ms": self.agent_cpu[command] * 1000 / max(1, len(runs)),
                "rss_kib": statistics.median(self.rss[command]) if self.rss[command] else 0}


TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, finished threads included) of a running process."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def settle(node_netns: str, timeout: float = 10.0) -> None:
    """Wait (unmeasured) until the agent's reaper deleted every retired veth, so its
    kernel work lands on no measured call (DEL answers before the link is deleted)."""
    from dcnet.cni.reaper import DYING_PREFIX
    from dcnet.cni.rtnl import Netlink

    def dying() -> bool:
        with Netlink() as nl:
            return any((link["name"] or "").startswith(DYING_PREFIX) for link in nl.links())
    deadline = time.monotonic() + timeout
    while netns.run_in(node_netns, dying) and time.monotonic() < deadline:
        time.sleep(0.002)


def wait_for(path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.05)


def burst(side: Side, pods: list[str], tag: str) -> tuple[float, list[str]]:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(pods)) as pool:
        results = list(pool.map(lambda item: side.call(
            "ADD", f"{tag}{item[0]}", f"/run/netns/{item[1]}", record=False),
            enumerate(pods)))
    wall = time.perf_counter() - started
    addresses = [json.loads(r.stdout)["ips"][-1]["address"] for r in results]
    for index, pod in enumerate(pods):
        side.call("DEL", f"{tag}{index}", f"/run/netns/{pod}", record=False)
    return wall, addresses


def floor_exec(argv: list[str]) -> tuple[float, float]:
    """(wall ms, CPU ms) of one exec with CNI_COMMAND=VERSION."""
    read_end, write_end = os.pipe()
    started = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, {"CNI_COMMAND": "VERSION"},
                         file_actions=[(os.POSIX_SPAWN_DUP2, write_end, 1)])
    os.close(write_end)
    while os.read(read_end, 65536):
        pass
    os.close(read_end)
    _, _, usage = os.wait4(pid, 0)
    return ((time.perf_counter() - started) * 1000,
            (usage.ru_utime + usage.ru_stime) * 1000)


def import_cost(launcher: str) -> list[tuple[int, str]]:
    """Cumulative import time (us) of the top modules the launcher loads for ADD."""
    with open(launcher) as handle:
        body = handle.read()
    python = body.splitlines()[0][2:].split()[0]
    done = subprocess.run([python, "-I", "-S", "-X", "importtime", "-c",
                           body + "\n", ], env={"CNI_COMMAND": "VERSION"},
                          capture_output=True, text=True)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        try:
            cumulative = int(parts[1])
        except ValueError:
            continue
        name = parts[2].rstrip()
        if not name.startswith("  "):  # top-level imports only
            rows.append((cumulative, name.strip()))
    return sorted(rows, reverse=True)[:8]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--no-thin", action="store_true", help="skip the Python thin client")
    parser.add_argument("--rolling-restart", action="store_true",
                        help="instead: replace the agent during a burst of --burst ADDs")
    parser.add_argument("--python", default=None,
                        help="interpreter for dcnet-python and the thin client (default: "
                             "this one; /usr/bin/python3 is a statically linked build that "
                             "starts faster than a shared-libpython one)")
    opts = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="dcnet-bench-")
    try:
        if opts.rolling_restart:
            return rolling_restart(opts, tmp)
        return run_benchmark(opts, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_benchmark(opts, tmp: str) -> int:
    exec_dir = f"{tmp}/exec"
    bins = {"shim": f"{tmp}/bin-shim", "fallback": f"{tmp}/bin-fallback",
            "thin": f"{tmp}/bin-thin"}
    shim = install(bins["shim"], opts.python, "c", exec_dir)
    # the same shim, built to look for the agent where there is none: always falls back
    install(bins["fallback"], opts.python, "c", f"{tmp}/no-agent-here")
    if not opts.no_thin:
        install(bins["thin"], opts.python, "python", exec_dir)
    assert installed_kind(shim) == "c"
    conf = {"cniVersion": "1.0.0", "name": "bench", "type": "dcnet",
            "clusterCIDR": "10.201.0.0/16", "subnetLen": 22, "runDir": f"{tmp}/run",
            "dataDir": f"{tmp}/data", "store": {"type": "file", "path": f"{tmp}/store"}}
    ref = {"cniVersion": "1.0.0", "name": "benchref", "type": "bridge", "bridge": "cni0",
           "isGateway": True, "ipMasq": False,
           "ipam": {"type": "host-local", "subnet": "10.202.0.0/24", "dataDir": f"{tmp}/ref"}}
    with open(f"{tmp}/dcnet.conf", "w") as handle:
        json.dump(conf, handle)
    count = max(opts.pods, opts.burst)
    load = [os.getloadavg()[0]]
    with Lab({"hosts": ["dcn", "ref"]}) as lab:
        agent = lab.start("dcn", [os.path.join(os.path.dirname(sys.executable), "dcnet-agent"),
                                  "run", "--conf", f"{tmp}/dcnet.conf", "--node", "bench",
                                  "--node-ip", "192.0.2.10", "--exec-dir", exec_dir],
                          name="agent")
        sides = [Side("reference", CniRuntime(ref, [REF_DIR], lab.netns("ref")), "r"),
                 Side("shim", CniRuntime(conf, [bins["shim"]], lab.netns("dcn")), "s",
                      agent.pid),
                 Side("fallback", CniRuntime(conf, [bins["fallback"]], lab.netns("dcn")),
                      "f")]
        if not opts.no_thin:
            sides.append(Side("thin", CniRuntime(conf, [bins["thin"]], lab.netns("dcn")),
                              "t", agent.pid))
        try:
            wait_for(f"{tmp}/run/bench/node.json")
            wait_for(f"{exec_dir}/net-{netns.identity(lab.netns('dcn'))[1]}.sock")
            for side in sides:
                for index in range(count):
                    name = f"{lab.prefix}-{side.tag}{index}"
                    netns.create(name)
                    side.pods.append(f"/run/netns/{name}")
            # warm-up: page cache, .pyc files, the reference bridge's creation of cni0
            for side in sides:
                side.call("ADD", "warm", side.pods[0], record=False)
                side.call("DEL", "warm", side.pods[0], record=False)
            for command in ("ADD", "DEL"):
                for index in range(opts.pods):
                    shift = index % len(sides)
                    for side in sides[shift:] + sides[:shift]:
                        side.call(command, f"c{index}", side.pods[index])
                load.append(os.getloadavg()[0])
            for side in sides:
                for index in range(RSS_SAMPLES):
                    pod = side.pods[index]
                    side.rss["ADD"].append(side.peak_rss("ADD", f"m{index}", pod))
                    side.rss["DEL"].append(side.peak_rss("DEL", f"m{index}", pod))
            bursts = {}
            for side in sides:
                wall, addresses = burst(side, [p.rsplit("/", 1)[1]
                                               for p in side.pods[:opts.burst]], "b")
                if len(set(addresses)) != len(addresses):
                    raise RuntimeError(f"{side.label}: duplicate addresses in burst")
                bursts[side.label] = wall
            load.append(os.getloadavg()[0])
            agent_rss = peak_rss_kib(agent.pid)
            floors = start_floors(lab.netns("dcn"), bins)
        finally:
            for side in sides:
                for path in side.pods:
                    netns.remove(path.rsplit("/", 1)[1])
            agent.terminate()
        report(sides, bursts, opts, bins, agent_rss, load, floors)
    return 0


def rolling_restart(opts, tmp: str) -> int:
    """The agent replaced during a burst of parallel ADDs through the installed shim."""
    exec_dir, bin_dir = f"{tmp}/exec", f"{tmp}/bin"
    install(bin_dir, opts.python, "c", exec_dir)
    marker = f"{tmp}/fallbacks"
    os.replace(f"{bin_dir}/dcnet-python", f"{bin_dir}/dcnet-python.real")
    with open(f"{bin_dir}/dcnet-python", "w") as handle:  # count the fallback's runs
        handle.write(f"#!/bin/sh\necho \"$CNI_COMMAND\" >> {marker}\n"
                     f"exec {bin_dir}/dcnet-python.real\n")
    os.chmod(f"{bin_dir}/dcnet-python", 0o755)
    conf = {"cniVersion": "1.0.0", "name": "bench", "type": "dcnet",
            "clusterCIDR": "10.201.0.0/16", "subnetLen": 22, "runDir": f"{tmp}/run",
            "dataDir": f"{tmp}/data", "store": {"type": "file", "path": f"{tmp}/store"}}
    with open(f"{tmp}/dcnet.conf", "w") as handle:
        json.dump(conf, handle)
    argv = [os.path.join(os.path.dirname(sys.executable), "dcnet-agent"), "run", "--conf",
            f"{tmp}/dcnet.conf", "--node", "bench", "--node-ip", "192.0.2.10",
            "--exec-dir", exec_dir]
    load = [os.getloadavg()[0]]
    with Lab({"hosts": ["dcn"]}) as lab:
        side = Side("shim", CniRuntime(conf, [bin_dir], lab.netns("dcn")), "s")
        old = lab.start("dcn", argv, name="agent-old")
        wait_for(f"{tmp}/run/bench/node.json")
        wait_for(f"{exec_dir}/net-{netns.identity(lab.netns('dcn'))[1]}.sock")
        pods = [f"{lab.prefix}-roll{i}" for i in range(opts.burst)]
        for name in pods:
            netns.create(name)
        try:
            side.call("ADD", "warm", f"/run/netns/{pods[0]}", record=False)
            side.call("DEL", "warm", f"/run/netns/{pods[0]}", record=False)
            open(marker, "w").close()
            new = lab.start("dcn", argv, name="agent-new")  # surge: stands by
            time.sleep(1.0)  # the new agent is up and waiting on the lock

            spacing = 2.0 / len(pods)  # ADDs start over 2 s; the old agent goes at 0.5 s

            starts: list[float] = []

            def add(index: int) -> tuple[float, str | None, str]:
                time.sleep(index * spacing)
                starts.append(time.monotonic())
                try:
                    done = side.call("ADD", f"r{index}", f"/run/netns/{pods[index]}",
                                     record=False)
                except RuntimeError as exc:
                    return 0.0, None, str(exc)
                return done.seconds, json.loads(done.stdout)["ips"][-1]["address"], ""
            with ThreadPoolExecutor(max_workers=len(pods)) as pool:
                futures = [pool.submit(add, i) for i in range(len(pods))]
                time.sleep(0.5)  # a quarter of the burst has started: roll the agent
                rolled = time.monotonic()
                old.terminate()
                results = [f.result() for f in futures]
            try:
                old.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stuck = {t: open(f"/proc/{old.pid}/task/{t}/wchan").read()  # noqa: SIM115
                         for t in os.listdir(f"/proc/{old.pid}/task")}
                with open(os.path.join(lab.log_dir, "agent-old.log")) as handle:
                    log = handle.read()[-3000:]
                print(f"old agent still running 30 s after SIGTERM: threads {stuck}\n{log}")
                old.kill()
            load.append(os.getloadavg()[0])
            deadline = time.monotonic() + 5.0  # the standby takes over within 0.1 s
            owner = 0
            while owner != new.pid and time.monotonic() < deadline:
                with open(f"{tmp}/run/bench/node.json") as handle:
                    owner = json.load(handle)["agentPid"]
                time.sleep(0.02)
            for index in range(len(pods)):
                side.call("DEL", f"r{index}", f"/run/netns/{pods[index]}", record=False)
            with open(marker) as handle:
                fallbacks = handle.read().split()
        finally:
            for name in pods:
                netns.remove(name)
    ms = [r[0] * 1000 for r in results if r[1]]
    addresses = [r[1] for r in results if r[1]]
    failed = [r[2] for r in results if not r[1]]
    print(f"rolling agent restart under a burst of {len(pods)} parallel ADDs (C shim; "
          f"{os.cpu_count()} CPUs, load {' -> '.join(f'{x:.2f}' for x in load)}):")
    print(f"  ADDs started after the old agent's SIGTERM  "
          f"{sum(1 for t in starts if t >= rolled)}")
    print(f"  failed ADDs          {len(failed)}")
    print(f"  duplicate addresses  {len(addresses) - len(set(addresses))}")
    print(f"  ADDs via fallback    {fallbacks.count('ADD')}")
    print(f"  new agent owns node  {owner == new.pid} (node.json within 5 s)")
    if ms:
        print(f"  ADD latency          p50 {statistics.median(ms):.1f} ms, "
              f"p99 {percentile(ms, 99):.1f} ms, max {max(ms):.1f} ms")
    for problem in failed[:5]:
        print(f"  failure: {problem.strip()[:300]}")
    if opts.json:
        print(json.dumps({"failed": len(failed), "load": load, "latency_ms": ms,
                          "duplicates": len(addresses) - len(set(addresses)),
                          "fallback_adds": fallbacks.count("ADD")}))
    return 1 if failed or len(addresses) != len(set(addresses)) else 0


def start_floors(node_netns: str, bins: dict) -> list[tuple[str, float, float]]:
    """(label, wall ms, CPU ms) medians of 20 VERSION execs in the node namespace (where
    the agent serves the shim)."""
    with open(os.path.join(bins["fallback"], "dcnet-python")) as handle:
        python = handle.readline().strip()[2:].split()[0]
    floors = [("python -IS -c pass", [python, "-IS", "-c", "pass"]),
              ("dcnet-python VERSION", [os.path.join(bins["fallback"], "dcnet-python")]),
              ("C shim, no agent (-> python)", [os.path.join(bins["fallback"], "dcnet")]),
              ("C shim + agent", [os.path.join(bins["shim"], "dcnet")]),
              ("reference bridge VERSION", [f"{REF_DIR}/bridge"])]
    if os.path.exists(os.path.join(bins["thin"], "dcnet")):
        floors.insert(4, ("Python thin client + agent", [os.path.join(bins["thin"], "dcnet")]))
    out = []
    for label, argv in floors:
        runs = [netns.run_in(node_netns, floor_exec, argv) for _ in range(20)]
        out.append((label, statistics.median(r[0] for r in runs),
                    statistics.median(r[1] for r in runs)))
    return out


def report(sides: list[Side], bursts: dict, opts, bins: dict, agent_rss: int,
           load: list[float], floors: list[tuple[str, float, float]]) -> None:
    figures: dict = {"load": load, "agent_peak_rss_kib": agent_rss}
    with open(os.path.join(bins["fallback"], "dcnet-python")) as handle:
        interpreter = handle.readline().strip()[2:]
    ref = sides[0]
    print(f"dcnet CNI vs reference bridge+host-local: {opts.pods} pods, burst of "
          f"{opts.burst}, {os.cpu_count()} CPUs, load {' -> '.join(f'{x:.2f}' for x in load)}"
          f"; dcnet-python: {interpreter}")
    print(f"{'':12}" + "".join(f"{side.label:>16}" for side in sides)
          + "".join(f"{side.label + '/ref':>14}" for side in sides[1:]))
    for command in ("ADD", "DEL"):
        stats = [side.stats(command) for side in sides]
        for st in stats:
            st["total_cpu_ms"] = st["cpu_ms"] + st["agent_cpu_ms"]
        figures[command] = {side.label: st for side, st in zip(sides, stats, strict=True)}
        for key, unit in (("median_ms", "ms"), ("p95_ms", "ms"), ("cpu_ms", "ms"),
                          ("agent_cpu_ms", "ms"), ("total_cpu_ms", "ms"), ("rss_kib", "KiB")):
            label = f"{command} {key.rsplit('_', 1)[0].replace('_', ' ')}"
            row = f"{label:12}" + "".join(f"{st[key]:>12.1f} {unit:<3}" for st in stats)
            base = stats[0][key]
            row += "".join(f"{st[key] / base:>13.2f}x" if base else f"{'-':>14}"
                           for st in stats[1:])
            print(row)
    print(f"{'burst':12}" + "".join(f"{bursts[s.label] * 1000:>12.0f} ms " for s in sides)
          + "".join(f"{bursts[s.label] / bursts[ref.label]:>13.2f}x" for s in sides[1:])
          + f"  (wall time of {opts.burst} parallel ADDs)")
    figures["burst_ms"] = {k: v * 1000 for k, v in bursts.items()}
    print(f"\ndcnet-agent peak RSS (VmHWM, resident, serves every pod): {agent_rss / 1024:.1f}"
          " MiB")
    print("\nstart-up floors (median of 20 execs, CNI_COMMAND=VERSION, in the node "
          "namespace; wall / CPU):")
    for label, wall, cpu in floors:
        print(f"  {label:<30}{wall:>7.1f} ms {cpu:>7.1f} ms")
    figures["floors"] = {label: [wall, cpu] for label, wall, cpu in floors}
    print("\ndcnet-python imports (cumulative us, python -X importtime):")
    for micros, name in import_cost(os.path.join(bins["fallback"], "dcnet-python")):
        print(f"  {micros:>7}  {name}")
    if opts.json:
        print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
