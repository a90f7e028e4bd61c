"""Benchmark: dcnet host-gw ADD/DEL on a dual-stack network against an IPv4-only one.

Two node namespaces in one lab run, each with its own ``dcnet-agent``: ``v4`` serves a
network with ``clusterCIDR: 10.201.0.0/16``, ``dual`` one with ``["10.203.0.0/16",
"fd00:203::/48"]`` (the same node subnet sizes per family). For every pod, ADD runs on
each side, interleaved with the order rotated (both see the same machine load), then DEL;
both through the installed C shim served by the agent, and again through the fallback
(``dcnet-python``, a fresh interpreter: the path whose imports must stay light). Prints
median and p95 latency per side, the agent's CPU per call (for the fallback sides that
is what the agent spends reacting to the pods' kernel events) and the dual/IPv4 ratio
of the medians. The helpers
(``Side``, ``wait_for``, ``percentile``) are ``bench/cni_add.py``'s.

    sudo .venv/bin/python bench/cni_add_dualstack.py [--pods 40] [--python PY] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile

from cni_add import Side, percentile, wait_for

from dcnet.cni.install import install
from dcnet.lab.builder import Lab
from dcnet.lab.cni_invoke import CniRuntime
from dcnet.sysio import netns

CIDRS = {"v4": "10.201.0.0/16", "dual": ["10.203.0.0/16", "fd00:203::/48"]}
NODE_IPS = {"v4": "192.0.2.10", "dual": "192.0.2.11,2001:db8::11"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=40)
    parser.add_argument("--python", default=None,
                        help="interpreter for dcnet-python (default: this one)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    opts = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="dcnet-bench-ds-")
    try:
        return run(opts, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def conf_of(tmp: str, label: str) -> dict:
    return {"cniVersion": "1.0.0", "name": f"bench{label}", "type": "dcnet",
            "clusterCIDR": CIDRS[label], "subnetLen": 22, "subnetLenV6": 64,
            "runDir": f"{tmp}/run-{label}", "dataDir": f"{tmp}/data-{label}",
            "store": {"type": "file", "path": f"{tmp}/store-{label}"}}


def run(opts, tmp: str) -> int:
    exec_dir = f"{tmp}/exec"
    install(f"{tmp}/bin-shim", opts.python, "c", exec_dir)
    install(f"{tmp}/bin-fallback", opts.python, "c", f"{tmp}/no-agent-here")
    agent_bin = os.path.join(os.path.dirname(sys.executable), "dcnet-agent")
    load = [os.getloadavg()[0]]
    with Lab({"hosts": ["v4", "dual"]}) as lab:
        sides, agents = [], []
        for label in ("v4", "dual"):
            conf = conf_of(tmp, label)
            path = f"{tmp}/{label}.conf"
            with open(path, "w") as handle:
                json.dump(conf, handle)
            agents.append(lab.start(label, [agent_bin, "run", "--conf", path, "--node",
                                            label, "--node-ip", NODE_IPS[label],
                                            "--exec-dir", exec_dir], name=f"agent-{label}"))
            wait_for(f"{tmp}/run-{label}/bench{label}/node.json")
            wait_for(f"{exec_dir}/net-{netns.identity(lab.netns(label))[1]}.sock")
            for via in ("shim", "fallback"):
                sides.append(Side(f"{label} {via}", CniRuntime(conf, [f"{tmp}/bin-{via}"],
                                                                lab.netns(label)),
                                  f"{label[0]}{via[0]}", agents[-1].pid))
        try:
            for side in sides:
                for index in range(opts.pods):
                    name = f"{lab.prefix}-{side.tag}{index}"
                    netns.create(name)
                    side.pods.append(f"/run/netns/{name}")
                side.call("ADD", "warm", side.pods[0], record=False)
                side.call("DEL", "warm", side.pods[0], record=False)
            for command in ("ADD", "DEL"):
                for index in range(opts.pods):
                    shift = index % len(sides)
                    for side in sides[shift:] + sides[:shift]:
                        side.call(command, f"c{index}", side.pods[index])
                load.append(os.getloadavg()[0])
            dual_ips = json.loads(sides[2].call("ADD", "show", sides[2].pods[0],
                                                record=False).stdout)["ips"]
            sides[2].call("DEL", "show", sides[2].pods[0], record=False)
        finally:
            for side in sides:
                for path in side.pods:
                    netns.remove(path.rsplit("/", 1)[1])
            for agent in agents:
                agent.terminate()
    report(sides, opts, load, dual_ips)
    return 0


def report(sides: list[Side], opts, load: list[float], dual_ips: list[dict]) -> None:
    print(f"dcnet host-gw ADD/DEL, dual stack vs IPv4 only: {opts.pods} pods per side, "
          f"{os.cpu_count()} CPUs, load {' -> '.join(f'{x:.2f}' for x in load)}")
    print(f"  a dual-stack ADD's addresses: {', '.join(ip['address'] for ip in dual_ips)}")
    figures: dict = {"load": load}
    by_label = {side.label: side for side in sides}
    for command in ("ADD", "DEL"):
        for via in ("shim", "fallback"):
            v4, dual = by_label[f"v4 {via}"], by_label[f"dual {via}"]
            ms = {label: [r.seconds * 1000 for r in side.runs[command]]
                  for label, side in (("v4", v4), ("dual", dual))}
            medians = {k: statistics.median(v) for k, v in ms.items()}
            ratio = medians["dual"] / medians["v4"]
            agent = {k: side.stats(command)["agent_cpu_ms"] for k, side in (("v4", v4),
                                                                            ("dual", dual))}
            print(f"  {command} via {via:<8}  IPv4 only median {medians['v4']:6.1f} ms "
                  f"(p95 {percentile(ms['v4'], 95):6.1f}, agent CPU {agent['v4']:4.1f})   "
                  f"dual stack median {medians['dual']:6.1f} ms (p95 "
                  f"{percentile(ms['dual'], 95):6.1f}, agent CPU {agent['dual']:4.1f})   "
                  f"dual/v4 {ratio:.2f}x")
            figures[f"{command} {via}"] = {"v4_median_ms": medians["v4"],
                                           "dual_median_ms": medians["dual"], "ratio": ratio,
                                           "v4_agent_cpu_ms": agent["v4"],
                                           "dual_agent_cpu_ms": agent["dual"]}
    if opts.json:
        print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    sys.exit(main())
