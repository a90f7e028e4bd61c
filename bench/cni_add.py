"""Benchmark: dcnet CNI ADD/DEL against the reference Go ``bridge`` + ``host-local``.

Builds two node namespaces in one lab run (one for dcnet with its agent, one for the
reference plugins), creates pod namespaces, then for every pod runs ADD with dcnet and
with the reference (interleaved, so both see the same machine load), then DEL; then a
burst of parallel ADDs per plugin. Both plugins are exec'd the same libcni-like way
(``dcnet.cni.invoke``: spawned from a thread already inside the node namespace, so no
``ip netns exec`` sits in the measured time). Prints median/p95 latency, peak RSS per
invocation (wait4), burst wall time, the ratios dcnet/reference, and dcnet's import cost.

    sudo .venv/bin/python bench/cni_add.py [--pods 50] [--burst 50]
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

from dcnet.cni.install import install
from dcnet.cni.invoke import CniRuntime, Execution, exec_plugin
from dcnet.lab.builder import Lab
from dcnet.sysio import netns

REF_DIR = "/usr/lib/cni"
TIME = "/usr/bin/time"
RSS_SAMPLES = 5


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


class Side:
    """One plugin under test: its runtime and the executions recorded per command."""

    def __init__(self, label: str, runtime: CniRuntime):
        self.label, self.runtime = label, runtime
        self.runs: dict[str, list[Execution]] = {"ADD": [], "DEL": []}
        self.rss: dict[str, list[int]] = {"ADD": [], "DEL": []}

    def call(self, command: str, container_id: str, pod_path: str,
             record: bool = True) -> Execution:
        rt = self.runtime
        plugin = rt.conflist["plugins"][0]
        env = rt.env(command, container_id, pod_path, "eth0")
        conf = rt.plugin_conf(plugin, None, None)
        done = exec_plugin(rt.find(plugin["type"]), env, json.dumps(conf), rt.node_netns)
        if done.rc != 0:
            raise RuntimeError(f"{self.label} {command} {container_id}: {done.stdout} "
                               f"{done.stderr}")
        if record:
            self.runs[command].append(done)
        return done

    def peak_rss(self, command: str, container_id: str, pod_path: str) -> int:
        """Peak RSS (KiB) of one invocation, measured by GNU time around the plugin
        (wait4 from this big process would report this process's own peak)."""
        rt = self.runtime
        plugin = rt.conflist["plugins"][0]
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
                "rss_kib": statistics.median(self.rss[command]) if self.rss[command] else 0}


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
    parser.add_argument("--python", default=None,
                        help="interpreter for the dcnet launcher (default: this one; "
                             "/usr/bin/python3 is a statically linked build that starts "
                             "faster than a shared-libpython one)")
    opts = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="dcnet-bench-")
    try:
        return run_benchmark(opts, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_benchmark(opts, tmp: str) -> int:
    bindir = os.path.join(tmp, "bin")
    launcher = install(bindir, opts.python)
    conf = {"cniVersion": "1.0.0", "name": "bench", "type": "dcnet",
            "clusterCIDR": "10.201.0.0/16", "runDir": f"{tmp}/run", "dataDir": f"{tmp}/data",
            "store": {"type": "file", "path": f"{tmp}/store"}}
    ref = {"cniVersion": "1.0.0", "name": "benchref", "type": "bridge", "bridge": "cni0",
           "isGateway": True, "ipMasq": False,
           "ipam": {"type": "host-local", "subnet": "10.202.0.0/24", "dataDir": f"{tmp}/ref"}}
    with open(f"{tmp}/dcnet.conf", "w") as handle:
        json.dump(conf, handle)
    count = max(opts.pods, opts.burst)
    pods: dict[str, list[str]] = {"dcnet": [], "reference": []}
    with Lab({"hosts": ["dcn", "ref"]}) as lab:
        agent = lab.start("dcn", [os.path.join(os.path.dirname(sys.executable), "dcnet-agent"),
                                  "run", "--conf", f"{tmp}/dcnet.conf", "--node", "bench",
                                  "--node-ip", "192.0.2.10"], name="agent")
        try:
            wait_for(f"{tmp}/run/bench/node.json")
            for label, tag in (("dcnet", "d"), ("reference", "r")):
                for index in range(count):
                    name = f"{lab.prefix}-{tag}{index}"
                    netns.create(name)
                    pods[label].append(f"/run/netns/{name}")
            dcnet_side = Side("dcnet", CniRuntime(conf, [bindir], lab.netns("dcn")))
            ref_side = Side("reference", CniRuntime(ref, [REF_DIR], lab.netns("ref")))
            sides = (dcnet_side, ref_side)
            # warm-up: page cache, .pyc files, the reference bridge's creation of cni0
            for side in sides:
                side.call("ADD", "warm", pods[side.label][0], record=False)
                side.call("DEL", "warm", pods[side.label][0], record=False)
            for command in ("ADD", "DEL"):
                for index in range(opts.pods):
                    for side in sides if index % 2 == 0 else reversed(sides):
                        side.call(command, f"c{index}", pods[side.label][index])
            for side in sides:
                for index in range(RSS_SAMPLES):
                    pod = pods[side.label][index]
                    side.rss["ADD"].append(side.peak_rss("ADD", f"m{index}", pod))
                    side.rss["DEL"].append(side.peak_rss("DEL", f"m{index}", pod))
            bursts = {}
            for side in sides:
                wall, addresses = burst(side, [p.rsplit("/", 1)[1]
                                               for p in pods[side.label][:opts.burst]], "b")
                if len(set(addresses)) != len(addresses):
                    raise RuntimeError(f"{side.label}: duplicate addresses in burst")
                bursts[side.label] = wall
        finally:
            for names in pods.values():
                for path in names:
                    netns.remove(path.rsplit("/", 1)[1])
            agent.terminate()
    report(dcnet_side, ref_side, bursts, opts, launcher)
    return 0


def report(dcnet_side: Side, ref_side: Side, bursts: dict, opts, launcher: str) -> None:
    figures = {}
    with open(launcher) as handle:
        interpreter = handle.readline().strip()[2:]
    print(f"dcnet CNI vs reference bridge+host-local: {opts.pods} pods, burst of "
          f"{opts.burst}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"launcher: {interpreter}")
    print(f"{'':10}{'dcnet':>22}{'reference':>22}{'ratio':>9}")
    for command in ("ADD", "DEL"):
        ours, theirs = dcnet_side.stats(command), ref_side.stats(command)
        figures[command] = {"dcnet": ours, "reference": theirs}
        for key, unit in (("median_ms", "ms"), ("p95_ms", "ms"), ("cpu_ms", "ms"),
                          ("rss_kib", "KiB")):
            ratio = ours[key] / theirs[key] if theirs[key] else float("nan")
            label = f"{command} {key.split('_')[0]}"
            print(f"{label:10}{ours[key]:>19.1f} {unit:<3}{theirs[key]:>18.1f} {unit:<3}"
                  f"{ratio:>8.2f}x")
    ratio = bursts["dcnet"] / bursts["reference"]
    print(f"{'burst':10}{bursts['dcnet'] * 1000:>19.0f} ms {bursts['reference'] * 1000:>18.0f}"
          f" ms {ratio:>8.2f}x  (wall time of {opts.burst} parallel ADDs)")
    figures["burst_ms"] = {k: v * 1000 for k, v in bursts.items()}
    print("\nstart-up floors (median of 20 execs; wall / CPU):")
    for label, argv in (("python -IS -c pass", [interpreter.split()[0], "-IS", "-c", "pass"]),
                        ("dcnet VERSION", [launcher]), ("reference bridge VERSION",
                                                        [f"{REF_DIR}/bridge"])):
        runs = [floor_exec(argv) for _ in range(20)]
        print(f"  {label:<26}{statistics.median(r[0] for r in runs):>7.1f} ms "
              f"{statistics.median(r[1] for r in runs):>7.1f} ms")
    print("\ndcnet launcher imports (cumulative us, python -X importtime):")
    for micros, name in import_cost(launcher):
        print(f"  {micros:>7}  {name}")
    if opts.json:
        print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
