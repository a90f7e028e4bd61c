"""Who made a drift (issue #20): the kernel's change notifications in a watched
namespace name the process. An ``ip route add`` by hand (``ip -batch``, alive while it
is read) is recorded with comm ``ip`` and its command line, an ``nft add rule`` with
comm ``nft`` (from NFTA_GEN_PROC_NAME); the kernel's own changes are not authors. The
agent's watcher (DriftWatch on a real nft target) puts the author into the audit event,
the log line, the etcd record and a bounded counter, and never blames its own repair;
``elbctl drift --watch`` names the author, a plain one-shot says it did not watch; the real
``elbctl agent`` on etcd with the nft target names ``nft`` for a rule added by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from dcnet.chaos import drift
from dcnet.cli import elbctl_drift
from dcnet.cli.elbctl import cli
from dcnet.elbstore.driftwatch import DriftWatch, plan_model, record_of
from dcnet.elbstore.keys import Keys
from dcnet.elbstore.store import ElbStore
from dcnet.nft import synth
from dcnet.sysio.nlmonitor import Monitor
from dcnet.target import session

pytestmark = pytest.mark.netns

VIP = "198.51.100.10"
SERVERS = {"10.0.0.1": 1, "10.0.0.2": 1}


def wait_for(predicate, what: str, timeout: float = 20.0):
    """Poll until predicate() is truthy (a readiness wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)
    return value


def by_hand_nft(name: str, *rule: str) -> None:
    subprocess.run(["ip", "netns", "exec", name, "nft", *rule], check=True)


@pytest.fixture
def director(lab_factory, tmp_path):
    lab = lab_factory({"hosts": [{"name": "director"}]})
    return lab.netns("director"), tmp_path


def test_a_route_by_ip_and_a_rule_by_nft_are_recorded_with_their_process(director):
    name, _ = director
    with Monitor(f"/run/netns/{name}") as monitor:
        ip = subprocess.Popen(["ip", "-n", name, "-batch", "-"], stdin=subprocess.PIPE,
                              text=True)
        try:
            ip.stdin.write("address add 10.9.8.1/24 dev lo\n"
                           "route add 10.9.9.0/24 dev lo table 101\n")
            ip.stdin.flush()
            [route] = wait_for(lambda: [c for c in monitor.changes()
                                        if c["what"].startswith("10.9.9.0/24")], "the route")
        finally:
            ip.stdin.close()
            ip.wait(timeout=10)
        assert (route["kind"], route["action"]) == ("route", "new")
        assert "table 101" in route["what"]
        assert route["by"]["pid"] == ip.pid and route["by"]["comm"] == "ip"
        assert route["by"]["cmdline"] == f"ip -n {name} -batch -"
        assert route["by"]["user"] == "root"
        by_hand_nft(name, "add table inet t; add chain inet t c; add rule inet t c counter")
        changes = wait_for(lambda: (c := monitor.changes()) and c[-1]["kind"] == "nft" and c,
                           "the nft transaction")
    nft = [c for c in changes if c["kind"] == "nft"]
    assert [(c["action"], c["what"]) for c in nft] == [
        ("new table", "inet t"), ("new chain", "inet t c"), ("new rule", "inet t c")]
    assert {c["by"]["comm"] for c in nft} == {"nft"}
    [address] = [c for c in changes if c["kind"] == "address"]
    assert address["what"].startswith("10.9.8.1/24") and address["by"]["comm"] == "ip"
    assert any(c["by"]["comm"] == "kernel" and c["what"].startswith("10.9.8.1/32")
               for c in changes)                  # the address's local route: the kernel's

    who = drift.changed_by("nft", changes)
    assert [a["comm"] for a in who["by"]] == ["ip", "nft"] and who["unknown"] == ""
    assert all(c["comm"] != "kernel" for c in who["changes"])
    lvs = drift.changed_by("lvs", changes)
    assert [a["comm"] for a in lvs["by"]] == ["ip"] and "IPVS" in lvs["unknown"]
    haproxy = drift.changed_by("haproxy", changes)
    assert haproxy["by"] == [] and "runtime API" in haproxy["unknown"]
    assert drift.changed_by("nft", None)["unknown"].startswith("not watched")


def nft_model():
    return synth.model(synth.lab_model_text(VIP, SERVERS))


def test_the_agents_watcher_names_who_changed_the_nft_target(director):
    name, tmp = director
    options = {"netns": name, "state_dir": str(tmp / "state")}
    model = nft_model()
    assert session.run("nft", model, options, apply=True, lock_timeout=30).ok
    lines: list[str] = []
    watch = DriftWatch("dir1", "nft", Keys(), str(tmp / "audit.jsonl"), netns=name,
                       log=lines.append)
    try:
        watch.settled("applied")                  # the agent's clean pass
        by_hand_nft(name, "add rule inet dcnet prerouting counter")
        assert watch.suspect("applied")
        plan = plan_model("nft", options, model).plan
        assert plan.changes
        repaired = session.run("nft", model, options, apply=True, lock_timeout=30)
        event = watch.noticed(plan, "etcd model revision 1", "repair",
                              repair=repaired.result, repair_plan=repaired.plan)
        who = event["changed_by"]
        assert [a["comm"] for a in who["by"]] == ["nft"], who
        assert who["changes"][0]["what"] == "inet dcnet prerouting"
        assert who["changes"][0]["action"] == "new rule"
        # the repair's own nft transaction came after the pass took the changes
        assert len(who["changes"]) == 1
        with open(tmp / "audit.jsonl") as handle:
            assert json.loads(handle.readline())["changed_by"] == who
        assert json.loads(record_of(event))["changed_by"] == who
        assert watch.authors == {"nft": 1}
        assert any("changed by nft (pid" in line for line in lines), lines
        watch.settled("applied")
        assert watch.suspect("applied")
        assert drift.changed_by("nft", watch._seen)["by"] == []
    finally:
        watch.close()


def test_elbctl_drift_names_the_author_only_when_it_watched(director, monkeypatch):
    name, tmp = director
    model_file = tmp / "model.yaml"
    model_file.write_text(synth.lab_model_text(VIP, SERVERS))
    args = ["drift", "-f", str(model_file), "--target", "nft", "--nft-netns", name,
            "--nft-state-dir", str(tmp / "state"), "--audit-log", str(tmp / "audit.jsonl")]
    runner = CliRunner()
    applied = runner.invoke(cli, ["apply", "-f", str(model_file), "--target", "nft",
                                  "--nft-netns", name, "--nft-state-dir", str(tmp / "state")])
    assert applied.exit_code == 0, applied.output

    started = threading.Event()

    class Watching(Monitor):
        def start(self):
            out = super().start()
            started.set()
            return out

    monkeypatch.setattr(elbctl_drift, "Monitor", Watching)
    result: list = []
    thread = threading.Thread(daemon=True, target=lambda: result.append(
        runner.invoke(cli, [*args, "--watch", "3"])))
    thread.start()
    assert started.wait(30)
    by_hand_nft(name, "add rule inet dcnet prerouting counter")
    thread.join(60)
    [watched] = result
    assert watched.exit_code == 2, watched.output
    event = json.loads(watched.stdout.splitlines()[-1])
    assert [a["comm"] for a in event["changed_by"]["by"]] == ["nft"], event["changed_by"]
    assert event["changed_by"]["by"][0]["pid"] != os.getpid()

    blind = runner.invoke(cli, args)
    assert blind.exit_code == 2, blind.output
    who = json.loads(blind.stdout.splitlines()[-1])["changed_by"]
    assert who["watched"] is False and who["by"] == []
    assert who["unknown"].startswith("not watched")


def test_elbctl_agent_records_the_nft_rule_added_by_hand_with_comm_nft(lab_factory, tmp_path,
                                                                     monkeypatch):
    """The real ``elbctl agent`` on etcd with the nft target (agent.drift: alert): a rule
    added by hand in its namespace is one audit event naming ``nft``, and a log line."""
    from dcnet.lab import elbstore_lab as elab

    elb = elab.ElbLab.create(lab_factory, str(tmp_path), directors=1, servers=0)
    data = elab.model_data({elab.server_address(1): 10, elab.server_address(2): 20})
    data["agent"] = {"drift": "alert"}
    assert elb.push(data, user=None) == 1
    log_path = tmp_path / "audit.jsonl"
    monkeypatch.setenv("DCNET_AUDIT_LOG", str(log_path))
    argv = [sys.executable, "-m", "dcnet.cli.elbctl", "agent", "--store", elb.url(None),
            "--director", "dir1", "--target", "nft", "--nft-state-dir",
            str(tmp_path / "nft"), "--cache-dir", str(tmp_path / "cache"), "--resync", "0.5"]
    elb.agents["agent-nft"] = agent = elb.lab.start("dir1", argv, name="agent-nft")
    name = elb.lab.netns("dir1")

    def agent_log() -> str:
        return (Path(elb.lab.log_dir) / "agent-nft.log").read_text(errors="replace")

    def clean_passes() -> bool:
        assert agent.poll() is None, agent_log()
        return "prerouting" in subprocess.run(
            ["ip", "netns", "exec", name, "nft", "list", "table", "inet", "dcnet"],
            capture_output=True, text=True).stdout

    def status():
        store = ElbStore(elb.cluster.client(prefix=elab.PREFIX), Keys())
        return {s.director: s for s in store.statuses()}.get("dir1")

    elb.wait(clean_passes, what="the agent's first apply")
    # the status is written after the pass settled: the next pass judges drift
    elb.wait(lambda: (s := status()) and s.result == "ok" and s.model_revision == 1,
             what="the agent's status")
    assert not log_path.exists()
    by_hand_nft(name, "add rule inet dcnet prerouting counter")
    events = elb.wait(lambda: log_path.exists() and [json.loads(line) for line in
                                                      log_path.read_text().splitlines()],
                      what="the audit event")
    [event] = events
    assert event["action"] == "alerted"
    assert [a["comm"] for a in event["changed_by"]["by"]] == ["nft"], event["changed_by"]
    assert event["changed_by"]["changes"][0]["what"] == "inet dcnet prerouting"
    elb.wait(lambda: "changed by nft (pid" in agent_log(), what="the log line")
