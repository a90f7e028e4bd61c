"""``elbctl chaos`` in the HAProxy lab: the shipped experiment "a real server killed under
load behind HAProxy" run end to end (failed requests during and after the fault, time to
detect, nothing left over), and a SIGKILLed runner whose nftables partition stays in place
until ``chaos recover`` (or the next run) reverts it from the journal."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import yaml
from click.testing import CliRunner

from dcnet.chaos import faults
from dcnet.chaos.journal import Journal
from dcnet.cli.elbctl import cli
from dcnet.haproxy.paths import Paths
from dcnet.lab import haproxy_lab as hlab
from dcnet.lab.haproxy_loadgen import one_request

pytestmark = pytest.mark.netns

RS1, RS2 = hlab.server_address(1), hlab.server_address(2)


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix="dcnet-chaos-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def lab(lab_factory, workdir):
    lab = lab_factory(hlab.topology(2))
    paths = Paths(run_dir=f"{workdir}/run")
    hlab.start_haproxy(lab, hlab.model_of(hlab.model_data({RS1: 10, RS2: 10})), paths)
    # the steady state an experiment needs: 30 answers in a row (both servers' checks up)
    deadline, row = time.monotonic() + 30, 0
    while row < 30:
        ok = lab.call("client", one_request, hlab.LB_ADDRESS, hlab.SERVICE_PORT, 1.0) is None
        row = row + 1 if ok else 0
        assert time.monotonic() < deadline, "HAProxy does not serve steadily"
        time.sleep(0.1)
    return lab


def reaches(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), 0.5):
            return True
    except OSError:
        return False


def test_shipped_experiment_real_server_killed_under_load(lab, workdir):
    journal, out = f"{workdir}/journal.jsonl", f"{workdir}/result.json"
    result = CliRunner().invoke(cli, [
        "chaos", "run", "haproxy-real-server-killed", "--var", f"LAB={lab.prefix}",
        "--var", f"PYTHON={sys.executable}", "--journal", journal, "--out", out,
        "--report", f"{workdir}/report"])
    assert result.exit_code == 0, result.output
    with open(f"{workdir}/report/timeline.png", "rb") as handle:     # the report's plot
        assert handle.read(4) == b"\x89PNG"
    with open(out) as handle:
        report = json.load(handle)
    assert report["ok"] and report["error"] is None and report["leftovers"] == []
    assert lab.process("rs2-http").poll() == -signal.SIGKILL       # the fault was real
    [step] = report["steps"]
    assert step["kind"] == "kill" and step["fault"]["signal"] == "KILL"
    assert [pid for pid, _ in step["fault"]["pids"]] == [lab.process("rs2-http").pid]
    vip = step["probes"]["vip"]
    assert vip["during"]["requests"] > 0 and vip["after"]["requests"] > 0
    assert (vip["time_to_detect"] is None) == (vip["during"]["failed"] == 0)
    assert report["probes"][0]["before"]["failed"] == 0
    assert report["probes"][0]["after"]["ok"]
    assert report["rollbacks"][0]["ready"]
    assert lab.call("lb", reaches, RS2, hlab.SERVER_PORT)             # rs2 started again
    assert not os.path.exists(journal)
    print("figures:", json.dumps({"during": vip["during"], "after": vip["after"],
                                  "time_to_detect": vip["time_to_detect"],
                                  "time_to_first_failure": vip["time_to_first_failure"],
                                  "time_to_recover": vip["time_to_recover"],
                                  "leftovers": report["leftovers"],
                                  "loadavg": report["loadavg"]}))


def start_runner(lab, journal: str, duration: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dcnet.cli.elbctl", "chaos", "run", "haproxy-partition",
         "--var", f"LAB={lab.prefix}", "--var", f"DURATION={duration}", "--journal", journal],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_fault(lab, runner: subprocess.Popen) -> list[str]:
    deadline = time.monotonic() + 30
    while not (tables := faults.tables(lab.netns("lb"))):
        if runner.poll() is not None or time.monotonic() > deadline:
            runner.kill()
            pytest.fail(f"no fault injected: {runner.communicate()[0]}")
        time.sleep(0.1)
    return tables


def test_sigkilled_runner_is_reverted_by_recover_and_by_the_next_run(lab, workdir):
    journal = f"{workdir}/journal.jsonl"
    assert lab.call("lb", reaches, RS1, hlab.SERVER_PORT)
    runner = start_runner(lab, journal, 120)
    try:
        tables = wait_for_fault(lab, runner)
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.communicate()
    assert tables == ["dcnet_chaos_haproxy_partition_0"]
    assert faults.tables(lab.netns("lb")) == tables              # survives its runner
    assert not lab.call("lb", reaches, RS1, hlab.SERVER_PORT)     # the partition is real
    assert lab.call("lb", reaches, RS2, hlab.SERVER_PORT)         # and only towards rs1
    assert [f["kind"] for _, f in Journal(journal).pending()] == ["partition"]

    recovered = CliRunner().invoke(cli, ["chaos", "recover", "--journal", journal])
    assert recovered.exit_code == 0, recovered.output
    assert "deleted nft table dcnet_chaos_haproxy_partition_0" in recovered.output
    assert faults.tables(lab.netns("lb")) == []
    assert lab.call("lb", reaches, RS1, hlab.SERVER_PORT)
    assert not os.path.exists(journal)
    again = CliRunner().invoke(cli, ["chaos", "recover", "--journal", journal])
    assert again.exit_code == 0 and "nothing to recover" in again.output

    runner = start_runner(lab, journal, 120)                     # killed again...
    try:
        wait_for_fault(lab, runner)
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.communicate()
    out = f"{workdir}/result.json"
    result = CliRunner().invoke(cli, [                           # ...the next run reverts it
        "chaos", "run", "haproxy-partition", "--var", f"LAB={lab.prefix}",
        "--var", "DURATION=1", "--journal", journal, "--out", out])
    with open(out) as handle:
        report = json.load(handle)
    assert report["recovered_at_start"] == [
        f"partition in {lab.netns('lb')}: deleted nft table dcnet_chaos_haproxy_partition_0"]
    assert result.exit_code == 0, result.output
    assert report["leftovers"] == [] and faults.tables(lab.netns("lb")) == []
    assert report["steps"][0]["fault"]["peer"] == f"{RS1}/32"


def test_ctrl_c_and_sigterm_revert_the_fault_before_the_runner_exits(lab, workdir):
    journal = f"{workdir}/journal.jsonl"
    for signum in (signal.SIGINT, signal.SIGTERM):
        runner = start_runner(lab, journal, 120)
        try:
            wait_for_fault(lab, runner)
            runner.send_signal(signum)
            output = runner.communicate(timeout=30)[0]
            assert runner.returncode == 130, output
        finally:
            if runner.poll() is None:
                runner.kill()
            runner.communicate()
        assert faults.tables(lab.netns("lb")) == []
        assert not os.path.exists(journal)
        assert lab.call("lb", reaches, RS1, hlab.SERVER_PORT)


EXPERIMENT = """\
chaos: 1
name: stop-and-loss
namespaces: [{lab}-client, {lab}-lb, {lab}-rs1]
steady_seconds: 1
probes:
  - name: vip
    namespace: {lab}-client
    url: http://10.251.0.1:80/
    min_success: 0.9
method:
  - fault: stop
    namespace: {lab}-rs1
    process: haproxy_lab 8080
    duration: 2
  - fault: loss
    namespace: {lab}-lb
    peer: 10.252.0.12
    percent: 50
    duration: 2
"""


def test_stop_is_resumed_and_loss_drops_some_packets(lab, workdir):
    path = f"{workdir}/experiment.yaml"
    with open(path, "w") as handle:
        handle.write(EXPERIMENT.format(lab=lab.prefix))
    seen: dict = {}
    rs1 = lab.process("rs1-http").pid

    def watch(line: str) -> None:        # runs in the runner, while each fault is in place
        if line.startswith("fault 0"):       # SIGSTOP is delivered asynchronously
            for _ in range(100):
                with open(f"/proc/{rs1}/stat") as handle:
                    seen["state"] = handle.read().rsplit(")", 1)[1].split()[0]
                if seen["state"] == "T":
                    break
                time.sleep(0.01)
        if line.startswith("fault 1"):
            seen["tables"] = faults.tables(lab.netns("lb"))
            answers = [lab.call("lb", reaches, RS2, hlab.SERVER_PORT) for _ in range(20)]
            seen["reached"] = sum(answers)

    from dcnet.chaos import experiment, runner
    report = runner.run(experiment.load(path), Journal(f"{workdir}/j.jsonl"), log=watch)
    assert report["error"] is None, report
    assert seen["state"] == "T"                                   # SIGSTOPped
    with open(f"/proc/{rs1}/stat") as handle:                     # and resumed
        assert handle.read().rsplit(")", 1)[1].split()[0] in ("S", "R")
    assert seen["tables"] == ["dcnet_chaos_stop_and_loss_1"]
    assert 0 < seen["reached"] < 20, seen                         # some lost, not all
    assert report["leftovers"] == [] and faults.tables(lab.netns("lb")) == []


def test_janitor_lists_a_backend_not_in_the_model_and_removes_it_through_haproxy(
        lab_factory, workdir):
    lab = lab_factory(hlab.topology(2))
    paths = Paths(run_dir=f"{workdir}/run")
    two = hlab.model_data({RS1: 10, RS2: 10}, services=2)
    hlab.start_haproxy(lab, hlab.model_of(two), paths)
    one = hlab.model_data({RS1: 10, RS2: 10}, services=1)
    model_file = f"{workdir}/model.yaml"
    with open(model_file, "w") as handle:
        yaml.safe_dump(one, handle)
    args = ["chaos", "unused", "-f", model_file, "--target", "haproxy",
            "--haproxy-run-dir", paths.run_dir, "-o", "json"]
    gone = hlab.job_name(1)
    runner = CliRunner()

    listed = runner.invoke(cli, args)
    assert listed.exit_code == 2, listed.output
    report = json.loads(listed.stdout)      # stderr carries the targets' progress lines
    assert report["unused"] and not report["applied"]
    assert all(gone in json.dumps(c["key"]) for c in report["unused"]), report["unused"]
    assert lab.call("client", one_request, hlab.LB_ADDRESS, hlab.SERVICE_PORT + 1, 1.0) is None

    removed = runner.invoke(cli, [*args, "--apply"])
    assert removed.exit_code == 0, removed.output
    assert json.loads(removed.stdout)["applied"] and json.loads(removed.stdout)["ok"]
    assert "removal of 2 server(s) by the reload: drained" in removed.stderr
    assert lab.call("client", one_request, hlab.LB_ADDRESS, hlab.SERVICE_PORT + 1,
                    1.0) is not None                                  # the port is gone
    # the kept service serves again once the reloaded worker's checks see its servers
    # (this test is about the janitor; reloads under load are tests/netns/test_haproxy_load)
    deadline = time.monotonic() + 20
    while (lab.call("client", one_request, hlab.LB_ADDRESS, hlab.SERVICE_PORT, 1.0) is not None
           and time.monotonic() < deadline):
        time.sleep(0.2)
    assert lab.call("client", one_request, hlab.LB_ADDRESS, hlab.SERVICE_PORT, 1.0) is None
    again = runner.invoke(cli, args)
    assert again.exit_code == 0 and json.loads(again.stdout)["unused"] == []
