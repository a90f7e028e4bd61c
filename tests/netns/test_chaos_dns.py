"""The shipped experiment "DNS answer follows health" run end to end in the DNS-health lab
(real named, HAProxy and ``elbctl dns follow``): SIGSTOPping the service's last real
server withdraws telecom's answer (the ``dns`` probe of telecom's client fails while the
default line's client keeps its answer), resuming it restores the answer, and nothing is
left over. The probe is also checked against a wrong expectation (it must fail)."""

from __future__ import annotations

import shutil
import time

import pytest

from dcnet.chaos import experiment, runner
from dcnet.chaos.experiment import Probe
from dcnet.chaos.journal import Journal
from dcnet.chaos.probes import DnsProbe, window
from dcnet.lab.dns_health_lab import DEFAULT_VIP, TELECOM_VIP, HealthLab, topology

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(shutil.which("haproxy") is None or shutil.which("named")
                                 is None or shutil.which("dig") is None,
                                 reason="needs haproxy, named and dig")]


@pytest.fixture
def health_lab(lab_factory, tmp_path) -> HealthLab:
    env = HealthLab(lab_factory(topology()), str(tmp_path / "elb"))
    env.wait_answer("telecom", TELECOM_VIP)
    return env


def probe_ratio(env: HealthLab, client: str, server: str, expect: str) -> dict:
    runner_ = DnsProbe(Probe(name="p", namespace=env.lab.netns(f"cli-{client}"), kind="dns",
                             server=server, qname=env.name(), expect=(expect,),
                             concurrency=1, interval=0.05))
    start = time.monotonic()
    runner_.start()
    time.sleep(1)
    runner_.stop()
    return {"window": window(runner_.records, start, time.monotonic()),
            "last_wrong": runner_.last_wrong}


def test_dns_probe_tells_right_from_wrong_answers(health_lab):
    right = probe_ratio(health_lab, "telecom", "192.0.2.1", TELECOM_VIP)
    assert right["window"]["requests"] > 0 and right["window"]["failed"] == 0
    wrong = probe_ratio(health_lab, "telecom", "192.0.2.1", DEFAULT_VIP)
    assert wrong["window"]["requests"] > 0 and wrong["window"]["success"] == 0
    assert wrong["last_wrong"] == [TELECOM_VIP]


def test_shipped_experiment_dns_answer_follows_health(health_lab, tmp_path):
    env = health_lab
    found = experiment.load(experiment.builtin("dns-answer-follows-health"),
                            {"LAB": env.lab.prefix, "NAME": env.name()})
    report = runner.run(found, Journal(str(tmp_path / "journal.jsonl")),
                        out=str(tmp_path / "result.json"))
    assert report["error"] is None, report
    assert report["ok"] and report["leftovers"] == [], report
    stop, pause = report["steps"]
    assert stop["kind"] == "stop" and stop["fault"]["pids"]          # the fault was real
    telecom = stop["probes"]["telecom"]
    # withdrawn while rs1 is stopped (telecom's clients got the default line's VIP) ...
    assert telecom["during"]["failed"] > 0, telecom
    assert telecom["time_to_detect"] is not None
    # ... and restored after it resumed; the default line never changed
    assert telecom["time_to_recover"] is not None
    assert stop["probes"]["default-line"]["during"]["failed"] == 0
    assert pause["probes"]["default-line"]["during"]["failed"] == 0
    assert env.answer("telecom") == [TELECOM_VIP] and env.answer("none") == [DEFAULT_VIP]
