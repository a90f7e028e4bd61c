"""The shipped chaos experiments for dcnet itself, each run end to end on a lab through
``elbctl chaos run --report``: the result file says whether the steady state held (or
failed as the experiment expects), what failed during and after the fault, and that
nothing was left over; the Markdown report and the timeline plot are written. Loads
last seconds, waits are bounded readiness waits, no duration is asserted."""

from __future__ import annotations

import json
import os
import sys

import pytest
from click.testing import CliRunner

from dcnet.cli.elbctl import cli
from tests.netns.test_cni_hostgw import AGENT, Cluster, underlay, wait_until

pytestmark = pytest.mark.netns


def run_experiment(name: str, tmp_path, **variables) -> dict:
    """Run a shipped experiment; its result, with the report files checked."""
    report_dir = tmp_path / "report"
    argv = ["chaos", "run", name, "--journal", str(tmp_path / "journal.jsonl"),
            "--report", str(report_dir)]
    for key, value in variables.items():
        argv += ["--var", f"{key}={value}"]
    done = CliRunner().invoke(cli, argv)
    assert os.path.exists(report_dir / "result.json"), (done.output, done.exception)
    with open(report_dir / "result.json") as handle:
        result = json.load(handle)
    markdown = (report_dir / "report.md").read_text()
    assert f"# Chaos experiment `{name}`" in markdown
    assert (report_dir / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert result["result_format"] == 2 and result["timeline"]["probes"]
    assert not os.path.exists(tmp_path / "journal.jsonl")         # every fault reverted
    assert done.exit_code == (0 if result["ok"] else 1), done.output
    print(f"figures {name}:", json.dumps({
        "steps": [{"fault": s["kind"], **{p: {k: v[k] for k in (
            "time_to_first_failure", "time_to_detect", "time_to_recover")} | {
            "during": v["during"], "after": v["after"]} for p, v in s["probes"].items()}}
            for s in result["steps"]],
        "leftovers": result["leftovers"], "settle_seconds": result["settle_seconds"],
        "loadavg": result["loadavg"],
        "dirty_failures": [p.get("dirty_failures") for p in result["probes"]]}))
    return result


@pytest.fixture
def hostgw(lab_factory, tmp_path):
    """Nodes n1 and n2 with their agents (routes converged), and n1's bridge made by one
    ADD and DEL, so the left-over check compares like with like."""
    nodes = ("n1", "n2")
    cluster = Cluster(lab_factory(underlay(nodes)), tmp_path / "cni", nodes)
    os.makedirs(cluster.root, exist_ok=True)
    for node in nodes:
        cluster.start_agent(node)
    wait_until(cluster.routes_converged, "routes between n1 and n2")
    runtime = cluster.runtime("n1")
    path = cluster.pod("warm-up")
    runtime.add("warm-up", path)
    runtime.delete("warm-up", path)
    cluster.remove_pods()
    yield cluster
    cluster.remove_pods()


def test_agent_sigkilled_during_a_burst_of_adds(hostgw, tmp_path):
    cluster = hostgw
    reservations = cluster.reservations("n1")
    result = run_experiment(
        "agent-killed-during-adds", tmp_path, LAB=cluster.lab.prefix, AGENT=AGENT,
        PYTHON=sys.executable, CONFLIST=cluster.conf_path("n1"), CNI_PATH=cluster.bin_dir,
        IPAM_DIR=str(cluster.ipam_dir("n1")), NODE_FILE=str(cluster.node_file("n1")),
        PEER_SUBNET=cluster.subnet("n2"))
    assert result["ok"], result
    assert result["leftovers"] == [] and result["error"] is None
    add, route = result["probes"]
    # "before" ends at the kill: ADDs in flight then fail (the agent closed the connection)
    assert add["after"]["failed"] == 0 and add["after"]["requests"] > 0
    [step] = result["steps"]
    assert step["kind"] == "kill" and step["fault"]["pids"]
    during = step["probes"]["add"]["during"]
    assert during["failed"] > 0                      # the agent was really gone
    assert all("is not running" in f for f in add["failed_adds"]), add["failed_adds"]
    assert route["total"]["failed"] == 0             # the route stayed all along
    assert result["rollbacks"][0]["ready"]
    assert cluster.reservations("n1") == reservations
    assert cluster.pod_veths("n1") == set()
