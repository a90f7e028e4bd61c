"""The shipped link and traffic-control experiments on the HAProxy lab, each run end to
end through ``elbctl chaos run --report`` (tests/netns/test_chaos_experiments.py's
runner): ``haproxy-uplink-flap`` (lb's client-facing link down and up twice under load:
requests fail while it is down, none after, lb's routes as before) and
``haproxy-rate-limit`` (a tbf on rs2's link, rs2 weighted to take 3 of 4 requests: no
request fails, the probe's median latency during the limit is over twice the one
before it). Also: the left-over snapshot does not count a fork with its parent's
command line (a fork-per-connection server's child: busybox httpd in the kernel lab's
lvs-real-server-killed came and went between the snapshots). Waits are bounded readiness waits; no
duration is asserted (the latency comparison is between windows of one run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from dcnet.chaos import snapshot
from dcnet.haproxy.paths import Paths
from dcnet.lab import haproxy_lab as hlab
from dcnet.lab.builder import remove_namespace_and_processes
from dcnet.lab.haproxy_loadgen import one_request
from dcnet.sysio import netns, proc
from tests.netns.test_chaos_experiments import run_experiment

pytestmark = pytest.mark.netns


@pytest.fixture
def lab(lab_factory):
    workdir = tempfile.mkdtemp(prefix="dcnet-chaos-link-")
    lab = lab_factory(hlab.topology(2))
    # rs2 (the rate-limited one) gets 3 of 4 requests: the p50 falls among its requests
    servers = {hlab.server_address(1): 10, hlab.server_address(2): 30}
    hlab.start_haproxy(lab, hlab.model_of(hlab.model_data(servers)),
                       Paths(run_dir=f"{workdir}/run"))
    deadline, row = time.monotonic() + 30, 0       # both servers' checks up: 30 in a row
    while row < 30:
        ok = lab.call("client", one_request, hlab.LB_ADDRESS, hlab.SERVICE_PORT, 1.0) is None
        row = row + 1 if ok else 0
        assert time.monotonic() < deadline, "HAProxy does not serve steadily"
        time.sleep(0.1)
    yield lab
    shutil.rmtree(workdir, ignore_errors=True)


def run(name: str, tmp_path, lab) -> dict:
    result = run_experiment(name, tmp_path, LAB=lab.prefix)
    print(f"figures {name} before:", json.dumps(result["probes"][0]["before"]))
    return result


def test_uplink_flap_under_load(lab, tmp_path):
    result = run("haproxy-uplink-flap", tmp_path, lab)
    assert result["ok"] and result["error"] is None and result["leftovers"] == [], result
    [step] = result["steps"]
    assert step["kind"] == "link-flap" and step["fault"]["interface"] == "c0"
    vip = step["probes"]["vip"]
    assert vip["during"]["failed"] > 0                 # the link really went down
    assert vip["during"]["failed"] < vip["during"]["requests"]     # and up in between
    assert vip["after"]["failed"] == 0 and vip["after"]["requests"] > 0
    assert result["probes"][0]["before"]["failed"] == 0


def test_rate_limit_on_a_real_server_slows_requests_that_succeed(lab, tmp_path):
    result = run("haproxy-rate-limit", tmp_path, lab)
    assert result["ok"] and result["error"] is None and result["leftovers"] == [], result
    [step] = result["steps"]
    assert step["kind"] == "rate" and step["fault"]["rate_bps"] == 64_000
    vip = step["probes"]["vip"]
    before = result["probes"][0]["before"]
    assert vip["during"]["requests"] > 0 and vip["during"]["failed"] == 0
    assert before["failed"] == 0 and vip["after"]["failed"] == 0
    # rs2's replies are paced by the tbf (8 bytes/ms): the median request is slower
    assert vip["during"]["latency_p50_ms"] > 2 * before["latency_p50_ms"], (before, vip)


def test_snapshot_does_not_count_a_fork_with_its_parents_command_line():
    name = f"chaos-fork-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    code = "import os, time; os.fork(); time.sleep(60)"
    parent = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while sum(code in proc.cmdline(p) for p in netns.pids(name)) < 2:
            assert time.monotonic() < deadline, "the fork did not happen"
            time.sleep(0.05)
        processes = snapshot.of_namespace(name)["processes"]
        assert processes == [f"1x {sys.executable} -c {code}"], processes
    finally:
        remove_namespace_and_processes(name)
        parent.wait(10)
