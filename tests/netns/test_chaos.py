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
from click.testing import CliRunner

from dcnet.chaos import faults
from dcnet.chaos.journal import Journal
from dcnet.cli.elbctl import cli
from dcnet.haproxy.paths import Paths
from dcnet.lab import haproxy_lab as hlab

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
        "--var", f"PYTHON={sys.executable}", "--journal", journal, "--out", out])
    assert result.exit_code == 0, result.output
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
                                  "leftovers": report["leftovers"]}))


def start_runner(lab, journal: str, duration: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dcnet.cli.elbctl", "chaos", "run", "haproxy-partition",
         "--var", f"LAB={lab.prefix}", "--var", f"DURATION={duration}", "--journal", journal],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_fault(lab, runner: subprocess.Popen) -> list[str]:
    deadline = time.monotonic() + 30
    while not (tables := faults.tables(lab.netns("lb"))):
        assert runner.poll() is None and time.monotonic() < deadline, "no fault injected"
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
        runner.wait()
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
        runner.wait()
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
