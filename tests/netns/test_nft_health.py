"""``elbctl health`` with the nft target, in namespaces: the model's HTTP checks run from
the director's namespace, a killed real server gets weight 0 (new requests avoid it, none
fail), a restarted one comes back, and ``--once`` plus ``plan --nft-health`` agree.

The lab is :mod:`dcnet.lab.lvs_lab`'s topology (director, three busybox httpd real servers
whose default route is the director, a client behind the unicom gateway), as in
tests/netns/test_nft.py.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
import time

import pytest

from dcnet.health import state
from dcnet.health.checker import Checker
from dcnet.lab import lvs_lab as lvslab
from dcnet.model import pieces as model_pieces
from dcnet.nft import synth
from dcnet.sysio import netns
from dcnet.target import session
from tests.netns import nft_lab

pytestmark = pytest.mark.netns

VIP = lvslab.VIPS["unicom"][0]
CLIENT = "cli-unicom"
RS = dict(zip(lvslab.SERVERS, ("rs1", "rs2", "rs3"), strict=True))
CHECK = ("    health_check: {type: http, path: /id, interval: 0.3, timeout: 0.25, "
         "rise: 2, fall: 2}\n")


def model():
    text = synth.lab_model_text(VIP, dict.fromkeys(lvslab.SERVERS, 1),
                                target_port=lvslab.RS_HTTP)
    return synth.model(text.replace("    real_servers:\n", CHECK + "    real_servers:\n"))


@pytest.fixture
def traffic_lab(lab_factory, tmp_path):
    return nft_lab.traffic_lab(lab_factory, tmp_path, VIP, health=True)


def hits(lab, count: int) -> collections.Counter:
    out = lab.run(CLIENT, lvslab.curl_loop(f"http://{VIP}/id", count), timeout=120).stdout
    answers = lvslab.parse_curl(out)
    assert len(answers) == count
    return collections.Counter(body if code == "200" else f"failed {code}"
                               for code, body in answers)


def kill_server(lab, host: str) -> None:
    popen = lab.process(f"{host}-http-{lvslab.RS_HTTP}")
    popen.kill()
    popen.wait(timeout=10)


def wait_for(what: str, condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def down_texts(options) -> frozenset[str]:
    return state.read_down(state.path_of(options["state_dir"], options["netns"]))


def check_text(address: str) -> str:
    return f"http {address}:{lvslab.RS_HTTP}/id 200"


def test_a_killed_server_is_taken_out_and_a_restarted_one_comes_back(traffic_lab):
    lab, options, busybox, docroot = traffic_lab
    m = model()

    def apply():
        outcome = session.run("nft", m, options, apply=True)
        assert outcome.ok, outcome.result.to_text()

    logs: list[str] = []
    checker = Checker(m, state.path_of(options["state_dir"], options["netns"]), apply,
                      logs.append, netns.path_of(options["netns"]))
    stop = threading.Event()
    runner = threading.Thread(daemon=True, target=checker.run, kwargs={"stop": stop.is_set})
    runner.start()
    try:
        wait_for("the first apply", lambda: checker.applies >= 1)
        assert set(hits(lab, 30)) == set(RS.values())
        rs2 = lvslab.SERVERS[1]
        kill_server(lab, "rs2")
        wait_for("rs2 down", lambda: down_texts(options) == {check_text(rs2)})
        wait_for("the apply after rs2 went down", lambda: checker.applies >= 2)
        pieces = model_pieces.Pieces(model_pieces.pack(m, 1))
        assert not session.drifted("nft", pieces, options)         # the down one at 0
        assert session.drifted("nft", pieces, {**options, "health": False})
        after = hits(lab, 40)
        assert set(after) == {"rs1", "rs3"}, after          # none failed, none to rs2
        lab.start("rs2", [busybox, "httpd", "-f", "-p", str(lvslab.RS_HTTP), "-h",
                          f"{docroot}/rs2"], name="rs2-again")
        wait_for("rs2 up", lambda: down_texts(options) == frozenset())
        wait_for("the apply after rs2 came back", lambda: checker.applies >= 3)
        assert "rs2" in hits(lab, 40)
    finally:
        stop.set()
        runner.join(timeout=30)
    assert any(f"{check_text(rs2)}: down" in line for line in logs), logs
    assert any(f"{check_text(rs2)}: up" in line for line in logs), logs


def test_once_and_plan_with_health_agree(traffic_lab, tmp_path):
    lab, options, _busybox, _docroot = traffic_lab
    path = tmp_path / "model.yaml"
    text = synth.lab_model_text(VIP, dict.fromkeys(lvslab.SERVERS, 1),
                                target_port=lvslab.RS_HTTP)
    path.write_text(text.replace("    real_servers:\n", CHECK + "    real_servers:\n"))
    kill_server(lab, "rs3")
    flags = ["--target", "nft", "--nft-netns", options["netns"],
             "--nft-state-dir", options["state_dir"]]
    elbctl = [sys.executable, "-m", "dcnet.cli.elbctl"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    once = subprocess.run([*elbctl, "health", "-f", str(path), *flags, "--once"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert once.returncode == 0, once.stderr
    assert once.stdout.splitlines() == [
        f"down: {check_text(lvslab.SERVERS[2])} (Connection refused)"], once.stdout
    assert set(hits(lab, 30)) == {"rs1", "rs2"}
    plan = [*elbctl, "plan", "-f", str(path), *flags, "--detailed-exitcode"]
    same = subprocess.run([*plan, "--nft-health"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert same.returncode == 0, same.stdout + same.stderr   # nothing to change
    without = subprocess.run(plan, capture_output=True, text=True, timeout=120, env=env)
    assert without.returncode == 2, without.stdout + without.stderr   # rs3 back at weight 1
