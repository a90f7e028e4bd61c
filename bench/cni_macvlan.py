"""Benchmark: dcnet macvlan + DHCP (agent) against the reference Go ``macvlan`` + ``dhcp``.

One lab run: a dnsmasq server (``--no-ping``, so neither side waits for its 3 s ping
check) and two node namespaces on one bridge; ``n1`` runs ``dcnet-agent``, ``n2`` runs the
reference DHCP daemon (``/usr/lib/cni/dhcp daemon``). For every pod, ADD with dcnet then
with the reference (interleaved: both see the same load), then DEL each. Both plugins are
exec'd the libcni way (``dcnet.lab.cni_invoke``). Prints median/p95 ADD and DEL latency, peak
RSS of one plugin invocation (GNU time), RSS of the resident daemons (VmHWM), how many
releases reached the server, and the ratios dcnet/reference.

    sudo .venv/bin/python bench/cni_macvlan.py [--pods 20] [--python /usr/bin/python3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from dcnet.cni.install import install
from dcnet.lab.builder import Lab
from dcnet.lab.cni_dhcp import DhcpLab, topology, wait_until
from dcnet.lab.cni_invoke import CniRuntime, Execution, exec_plugin

REF_DIR = "/usr/lib/cni"
TIME = "/usr/bin/time"
VERSION = "1.0.0"  # the reference plugins speak up to 1.0.0
RSS_SAMPLES = 3


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


class Side:
    def __init__(self, label: str, runtime: CniRuntime):
        self.label, self.runtime = label, runtime
        self.runs: dict[str, list[Execution]] = {"ADD": [], "DEL": []}
        self.results: dict[str, dict] = {}

    def _conf(self, cid: str) -> dict:
        rt = self.runtime
        plugin = rt.conflist["plugins"][0]
        return rt.plugin_conf(plugin, self.results.get(cid), None)

    def call(self, command: str, cid: str, pod: str, wrapper=None) -> Execution:
        rt = self.runtime
        env = rt.env(command, cid, pod, "eth0",
                     f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={cid}")
        done = exec_plugin(rt.find(rt.conflist["plugins"][0]["type"]), env,
                           json.dumps(self._conf(cid)), rt.node_netns, wrapper=wrapper)
        if done.rc != 0:
            raise RuntimeError(f"{self.label} {command} {cid}: {done.stdout} {done.stderr}")
        if command == "ADD" and wrapper is None:
            self.results[cid] = json.loads(done.stdout)
        return done

    def stats(self, command: str) -> dict:
        times = [r.seconds * 1000 for r in self.runs[command]]
        cpu = [r.cpu_seconds * 1000 for r in self.runs[command]]
        return {"median": statistics.median(times), "p95": percentile(times, 95),
                "cpu": statistics.median(cpu)}


def peak_rss(side: Side, command: str, cid: str, pod: str) -> int:
    with tempfile.NamedTemporaryFile("r") as out:
        side.call(command, cid, pod, wrapper=[TIME, "-f", "%M", "-o", out.name])
        return int(out.read().split()[-1])


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--python", default=None, help="interpreter of the dcnet launcher")
    options = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dcnet-bench-macvlan-"))
    try:
        with Lab(topology()) as lab:
            run(lab, root, options)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(lab: Lab, root: Path, options) -> None:
    made = DhcpLab(lab, root)
    try:
        if options.python:
            install(made.bin_dir, options.python)
        made.start_dnsmasq(first=100, last=250, t1=None, t2=None, lease="1h")
        agent = made.start_agent("n1", master="eth0", macvlanMode="bridge")
        ref_socket = root / "ref-dhcp.sock"
        daemon = lab.start("n2", [f"{REF_DIR}/dhcp", "daemon", "-socketpath", str(ref_socket)],
                           name="ref-dhcp")
        wait_until(ref_socket.exists, "the reference dhcp daemon")
        ours = Side("dcnet", made.runtime("n1", VERSION, master="eth0"))
        ref = Side("reference", CniRuntime(
            {"cniVersion": VERSION, "name": "refnet", "type": "macvlan", "master": "eth0",
             "mode": "bridge", "ipam": {"type": "dhcp", "daemonSocketPath": str(ref_socket)}},
            [REF_DIR], lab.netns("n2")))
        pods = [(made.pod(f"o{i}"), made.pod(f"r{i}")) for i in range(options.pods)]
        for side, cid, pod in (("ours", "warm-o", made.pod("warm-o")),
                               ("ref", "warm-r", made.pod("warm-r"))):
            target = ours if side == "ours" else ref
            target.call("ADD", cid, pod)
            target.call("DEL", cid, pod)
        for index, (ours_pod, ref_pod) in enumerate(pods):
            ours.runs["ADD"].append(ours.call("ADD", f"o{index}", ours_pod))
            ref.runs["ADD"].append(ref.call("ADD", f"r{index}", ref_pod))
        addresses = {"dcnet": [ours.results[f"o{i}"]["ips"][0]["address"].split("/")[0]
                               for i in range(options.pods)],
                     "reference": [ref.results[f"r{i}"]["ips"][0]["address"].split("/")[0]
                                   for i in range(options.pods)]}
        for index, (ours_pod, ref_pod) in enumerate(pods):
            ours.runs["DEL"].append(ours.call("DEL", f"o{index}", ours_pod))
            ref.runs["DEL"].append(ref.call("DEL", f"r{index}", ref_pod))
        time.sleep(1.0)  # let the last releases land in the lease file
        leases = made.server_leases()
        released = {label: sum(1 for a in addrs if a not in leases)
                    for label, addrs in addresses.items()}
        rss = {"dcnet": {"ADD": [], "DEL": []}, "reference": {"ADD": [], "DEL": []}}
        for index in range(RSS_SAMPLES):
            for side, label, prefix in ((ours, "dcnet", "so"), (ref, "reference", "sr")):
                pod = made.pod(f"{prefix}{index}")
                rss[label]["ADD"].append(peak_rss(side, "ADD", f"{prefix}{index}", pod))
                rss[label]["DEL"].append(peak_rss(side, "DEL", f"{prefix}{index}", pod))
        report(ours, ref, rss, released, options.pods,
               {"dcnet-agent": vm_hwm(agent.pid), "reference dhcp daemon": vm_hwm(daemon.pid)})
    finally:
        made.close()


def report(ours: Side, ref: Side, rss: dict, released: dict, pods: int,
           daemons: dict) -> None:
    print(f"{pods} pods each, interleaved, same dnsmasq (--no-ping), cniVersion {VERSION}, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'':24}{'dcnet':>12}{'reference':>12}{'ratio':>8}")
    for command in ("ADD", "DEL"):
        a, b = ours.stats(command), ref.stats(command)
        for key in ("median", "p95", "cpu"):
            print(f"{command + ' ' + key + ' (ms)':24}{a[key]:12.1f}{b[key]:12.1f}"
                  f"{a[key] / b[key]:8.2f}x")
    for command in ("ADD", "DEL"):
        a = statistics.median(rss["dcnet"][command]) / 1024
        b = statistics.median(rss["reference"][command]) / 1024
        print(f"{command + ' peak RSS (MiB)':24}{a:12.1f}{b:12.1f}{a / b:8.2f}x")
    a, b = (v / 1024 for v in daemons.values())
    print(f"{'daemon VmHWM (MiB)':24}{a:12.1f}{b:12.1f}{a / b:8.2f}x")
    print(f"{'releases at the server':24}{released['dcnet']:>9}/{pods}"
          f"{released['reference']:>9}/{pods}")


if __name__ == "__main__":
    main()
