"""The shipped chaos experiments for dcnet itself, each run end to end on a lab through
``elbctl chaos run --report`` (the VRRP ones through the runner and the report writer
directly, to look at the directors while the fault is in place): the result file says
whether the steady state held, what failed during and after the fault, and that
nothing was left over; the Markdown report and the timeline plot are written. Loads
last seconds, waits are bounded readiness waits, no duration is asserted.

Shipped experiments run here: agent-killed-during-adds, etcd-member-killed, etcd-stopped
(host-gw), dhcp-server-gone (MACVLAN), vrrp-failover and vrrp-director-partitioned
(keepalived in namespaces; the second heals the partition so that the director that
stayed master hears no lower-priority advert: see its file);
haproxy-real-server-killed and haproxy-partition run in tests/netns/test_chaos.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from dcnet.cli.elbctl import cli
from dcnet.lab.cni_dhcp import DhcpLab
from dcnet.lab.cni_dhcp import topology as dhcp_topology
from dcnet.lab.etcd_lab import start_etcd_cluster
from dcnet.lab.haproxy_loadgen import one_request
from dcnet.lvs.keepalived import render
from dcnet.model import parse_model
from dcnet.sysio import netns
from tests.netns.test_cni_etcd import ETCD_HOSTS, EtcdNodes, etcd_underlay
from tests.netns.test_cni_hostgw import AGENT, Cluster, underlay, wait_until
from tests.netns.test_lvs_keepalived import (
    FAILOVER_MODEL,
    VIP,
    failover_topology,
    has_vip,
    wait_for,
)

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
    warm_up(cluster)
    yield cluster
    cluster.remove_pods()


def warm_up(cluster) -> None:
    """Start the agents of n1 and n2, wait for their routes, and make n1's bridge by one
    ADD and DEL (so a left-over check compares like with like)."""
    os.makedirs(cluster.root, exist_ok=True)
    for node in ("n1", "n2"):
        cluster.start_agent(node)
    wait_until(cluster.routes_converged, "routes between n1 and n2")
    runtime = cluster.runtime("n1")
    path = cluster.pod("warm-up")
    runtime.add("warm-up", path)
    runtime.delete("warm-up", path)
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


# ---------------------------------------------------------------- etcd under host-gw


def command_line(lab, host: str, pattern: str) -> str:
    """The command line (a JSON list) of the one process in ``host`` matching pattern."""
    found = []
    for pid in netns.pids(lab.netns(host)):
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().decode().split("\0")[:-1]
        if pattern in " ".join(argv):
            found.append(argv)
    assert len(found) == 1, found
    return json.dumps(found[0])


@pytest.fixture
def etcd_hostgw(lab_factory, tmp_path):
    """Nodes n1 and n2 whose agents keep their leases in a 3-member etcd (e1..e3)."""
    lab = lab_factory(etcd_underlay())
    etcd = start_etcd_cluster(lab, list(ETCD_HOSTS), str(tmp_path / "etcd"), client_host="sw")
    try:
        etcd.wait_healthy()
        nodes = EtcdNodes(lab, tmp_path / "cni", etcd)
        warm_up(nodes)
        yield nodes
        nodes.remove_pods()
    finally:
        etcd.close()


def etcd_variables(nodes) -> dict:
    return {"LAB": nodes.lab.prefix, "CONFLIST": nodes.conf_path("n1"),
            "CNI_PATH": nodes.bin_dir, "IPAM_DIR": str(nodes.ipam_dir("n1")),
            "PEER_SUBNET": nodes.subnet("n2"), "LOG_DIR": str(nodes.root)}


def check_pods_kept_starting(result: dict, nodes, reservations: dict) -> None:
    assert result["ok"], result
    assert result["leftovers"] == [] and result["error"] is None
    add, route = result["probes"]
    assert add["total"]["failed"] == 0 and add["total"]["requests"] > 0, add
    assert route["total"]["failed"] == 0, route           # host-gw kept its route
    assert all(r["ready"] for r in result["rollbacks"])
    assert nodes.reservations("n1") == reservations
    # etcd serves again (the members the rollbacks started are not the lab's processes)
    wait_until(lambda: serves(nodes), "etcd serves the agents' leases again")
    for node in ("n1", "n2"):
        wait_until(lambda n=node: not nodes.node_state(n)["degraded"], f"{node} recovers")


def serves(nodes) -> bool:
    try:
        return sorted(holder for _, holder in nodes.lease_keys().values()) == ["n1", "n2"]
    except Exception:       # any client error: not serving yet
        return False


def test_etcd_member_killed_while_pods_start(etcd_hostgw, tmp_path):
    nodes = etcd_hostgw
    reservations = nodes.reservations("n1")
    result = run_experiment("etcd-member-killed", tmp_path, **etcd_variables(nodes),
                            MEMBER_ARGV=command_line(nodes.lab, "e1", "--name etcd1 "))
    check_pods_kept_starting(result, nodes, reservations)
    assert result["steps"][0]["probes"]["add"]["during"]["requests"] > 0


def test_all_of_etcd_stopped_while_pods_start(etcd_hostgw, tmp_path):
    nodes = etcd_hostgw
    reservations = nodes.reservations("n1")
    argv = {f"E{i}_ARGV": command_line(nodes.lab, f"e{i}", f"--name etcd{i} ")
            for i in (1, 2, 3)}
    result = run_experiment("etcd-stopped", tmp_path, **etcd_variables(nodes), **argv)
    check_pods_kept_starting(result, nodes, reservations)
    assert [s["fault"]["signal"] for s in result["steps"]] == ["TERM"] * 3
    assert result["steps"][2]["probes"]["add"]["during"]["requests"] > 0


def test_the_route_probe_reads_the_table_from_its_thread(lab_factory, monkeypatch):
    """The route probe answers whether the prefix is a route, however late: no program
    to start within a timeout (``ip route show`` under 1 s once failed a request of the
    etcd-member-killed run at load 11, the route there all along). Here no program can
    be started at all; the answers are still right, and a missing route says so."""
    from dcnet.chaos import probes
    from dcnet.chaos.experiment import Probe

    lab = lab_factory({"hosts": [{"name": "n1"}]})
    name = lab.netns("n1")
    for argv in (["link", "set", "lo", "up"], ["route", "add", "10.244.9.0/24", "dev", "lo"],
                 ["-6", "route", "add", "fd00:9::/64", "dev", "lo"]):
        subprocess.run(["ip", "-n", name, *argv], check=True)

    def no_programs(*_a, **_k):
        raise OSError("no program starts on this machine now")

    def answers(route: str) -> list[bool]:
        runner = probes.make(Probe(name="route", namespace=name, kind="route", route=route,
                                   concurrency=1, interval=0.01))
        with monkeypatch.context() as patch:
            patch.setattr(subprocess, "run", no_programs)
            runner.start()
            wait_until(lambda: len(runner.records) >= 3, f"3 answers for {route}")
            runner.stop()
        return sorted({ok for _t, ok, _took in runner.records}), getattr(runner, "last_error", None)

    assert answers("10.244.9.0/24") == ([True], None)
    assert answers("fd00:9::/64") == ([True], None)
    assert answers("10.244.8.0/24") == (
        [False], "no unicast route 10.244.8.0/24 in the main table")


# ---------------------------------------------------------------- VRRP failover under load


def vrrp_lab(lab_factory, tmp_path):
    """Directors lvs-a (master) and lvs-b with keepalived and an HTTP server each, the
    VIP answering the carrier's router (isp); keepalived's command line per director."""
    lab = lab_factory(failover_topology())
    model = parse_model(FAILOVER_MODEL)
    argv = {}
    for director in ("lvs-a", "lvs-b"):
        conf = tmp_path / f"{director}.conf"
        conf.write_text(render(model, director=director))
        run = tmp_path / director
        run.mkdir()
        argv[director] = ["keepalived", "-P", "-n", "-l", "-D", "-f", str(conf),
                          "-p", f"{run}/k.pid", "-r", f"{run}/v.pid"]
        lab.start(director, argv[director], name=f"keepalived-{director}",
                  log_path=str(tmp_path / f"{director}.log"))
        lab.start(director, [sys.executable, "-m", "dcnet.lab.haproxy_lab", "8080",
                             "0.0.0.0"], name=f"http-{director}")
    assert wait_for(lambda: has_vip(lab, "lvs-a"), 30), (tmp_path / "lvs-a.log").read_text()
    wait_until(lambda: lab.call("isp", one_request, VIP, 8080, 1.0) is None,
               "the VIP answers")
    assert not has_vip(lab, "lvs-b")
    return lab, argv


def test_vrrp_failover_under_http_load(lab_factory, tmp_path):
    lab, argv = vrrp_lab(lab_factory, tmp_path)
    moved = {}

    def watch(line: str) -> None:       # in the runner, while lvs-a's keepalived is dead
        if line.startswith("fault 0"):
            # reaped, as a supervisor would: keepalived refuses to start while its pid
            # file names a pid that exists (a zombie here)
            lab.process("keepalived-lvs-a").wait(10)
            moved["lvs-b"] = wait_for(lambda: has_vip(lab, "lvs-b"), 30)

    from dcnet.chaos import experiment, report, runner
    from dcnet.chaos.journal import Journal
    loaded = experiment.load(experiment.builtin("vrrp-failover"), {
        "LAB": lab.prefix, "KEEPALIVED_ARGV": json.dumps(argv["lvs-a"]),
        "LOG": str(tmp_path / "lvs-a-restarted.log")})
    result = runner.run(loaded, Journal(str(tmp_path / "journal.jsonl")), log=watch)
    report.write(result, str(tmp_path / "report"))
    print("figures vrrp-failover:", json.dumps({
        "vip": result["steps"][0]["probes"]["vip"], "leftovers": result["leftovers"],
        "settle_seconds": result["settle_seconds"], "loadavg": result["loadavg"]}))
    assert moved["lvs-b"], (tmp_path / "lvs-b.log").read_text()      # the failover was real
    assert result["error"] is None and result["leftovers"] == [], result["leftovers"]
    assert result["ok"] and result["probes"][0]["after"]["ok"]
    assert result["rollbacks"][0]["ready"]
    assert has_vip(lab, "lvs-a") and not has_vip(lab, "lvs-b")       # taken back
    assert (tmp_path / "report" / "timeline.png").exists()


# ---------------------------------------------------------------- DHCP server gone (MACVLAN)


def test_dhcp_server_gone_while_pods_start(lab_factory, tmp_path):
    lab = DhcpLab(lab_factory(dhcp_topology(("n1",))), tmp_path / "mv", nodes=("n1",))
    try:
        lab.start_dnsmasq()
        lab.start_agent("n1")
        dnsmasq = command_line(lab.lab, "dhcp", "dnsmasq ")
        conflist = lab.conf_path("n1", dhcp={"clientID": "pod", "timeout": 4})
        state_dir = str(tmp_path / "mv" / "state-n1" / "mvnet")
        result = run_experiment(
            "dhcp-server-gone", tmp_path, LAB=lab.lab.prefix, CONFLIST=conflist,
            CNI_PATH=lab.bin_dir, STATE_DIR=state_dir, DNSMASQ_ARGV=dnsmasq,
            LOG=str(tmp_path / "dnsmasq-restarted.log"))
        assert result["error"] is None and result["leftovers"] == [], result["leftovers"]
        assert result["ok"] and result["probes"][0]["after"]["ok"]
        [add] = result["probes"]
        during = result["steps"][0]["probes"]["add"]["during"]
        assert during["failed"] > 0                       # no lease without the server
        assert add["dirty_failures"] == 0                 # each failed ADD left nothing
        assert lab.journal("n1") == {}
    finally:
        lab.close()


def test_vrrp_director_partitioned_under_http_load(lab_factory, tmp_path):
    lab, _ = vrrp_lab(lab_factory, tmp_path)
    assert "vrrp_garp_master_refresh 5" in (tmp_path / "lvs-a.conf").read_text()
    moved = {}

    def watch(line: str) -> None:       # in the runner, while lvs-a is cut off
        if line.startswith("fault 1"):
            moved["lvs-b"] = wait_for(lambda: has_vip(lab, "lvs-b"), 30)

    from dcnet.chaos import experiment, report, runner
    from dcnet.chaos.journal import Journal
    loaded = experiment.load(experiment.builtin("vrrp-director-partitioned"),
                             {"LAB": lab.prefix})
    before = {d: len((tmp_path / f"{d}.log").read_text()) for d in ("lvs-a", "lvs-b")}
    result = runner.run(loaded, Journal(str(tmp_path / "journal.jsonl")), log=watch)
    report.write(result, str(tmp_path / "report"))
    heal = result["steps"][1]
    print("figures vrrp-director-partitioned:", json.dumps({
        "vip": heal["probes"]["vip"], "leftovers": result["leftovers"],
        "rollback": result["rollbacks"], "after": result["probes"][0]["after"],
        "settle_seconds": result["settle_seconds"], "loadavg": result["loadavg"]}))
    logs = {d: (tmp_path / f"{d}.log").read_text()[before[d]:] for d in ("lvs-a", "lvs-b")}
    assert moved["lvs-b"], logs["lvs-b"]                              # the failover was real
    assert heal["namespace"] == f"{lab.prefix}-lvs-a" and heal["kind"] == "partition"
    # the order the method forces: lvs-b heard lvs-a and stepped down, lvs-a never heard
    # lvs-b's lower-priority advert (so no gratuitous ARP answered one)
    assert "Master received advert from 198.51.100.2 with higher priority" in logs["lvs-b"]
    assert "with lower priority" not in logs["lvs-a"], logs["lvs-a"]
    assert result["error"] is None and result["leftovers"] == [], result["leftovers"]
    # the VIP answered again within the rollback's bounded wait, then the steady state held
    assert result["rollbacks"][0]["ready"], (result["rollbacks"], logs)
    assert result["ok"] and result["probes"][0]["after"]["ok"], result["probes"]
    assert heal["probes"]["vip"]["time_to_recover"] is not None
    assert has_vip(lab, "lvs-a") and not has_vip(lab, "lvs-b")
    mac_a = lab.run("lvs-a", ["cat", "/sys/class/net/ctc0/address"]).stdout.strip()
    assert mac_a in lab.run("isp", ["ip", "neigh", "show", VIP]).stdout  # lvs-a's again
