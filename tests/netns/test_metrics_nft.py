"""The nft target's traffic counters as the exporter serves them, on this kernel.

:mod:`dcnet.lab.lvs_lab`'s topology (a director holding the unicom VIP on ``lo``, three
busybox httpd real servers routed back through it, a client behind the unicom gateway);
``elbctl exporter --target nft``'s collector (``elb_registry``, the model labelling its
series) is scraped in this process before and after real HTTP requests through the VIP:
the connections, packets and bytes of the service rise by what was sent, traffic is not
a change of the table (a plan made before it still applies, a second apply writes
nothing) and ``promtool check metrics`` is clean.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from dcnet.cli.elbctl_metrics import Watch, elb_registry
from dcnet.lab import lvs_lab as lvslab
from dcnet.metrics.cardinality import Bound
from dcnet.nft import synth
from dcnet.target import apply_plan, make_plan, registry, session
from tests.netns import nft_lab
from tests.unit.metrics_text import value

pytestmark = pytest.mark.netns

VIP = lvslab.VIPS["unicom"][0]
CLIENT = "cli-unicom"
REQUESTS = 8


def model(weights: tuple[int, ...] = (1, 1, 1)):
    servers = dict(zip(lvslab.SERVERS, weights, strict=True))
    return synth.model(synth.lab_model_text(VIP, servers, target_port=lvslab.RS_HTTP))


@pytest.fixture
def traffic_lab(lab_factory, tmp_path):
    built = nft_lab.traffic_lab(lab_factory, tmp_path, VIP)
    return built.lab, built.options


def test_traffic_through_a_vip_raises_its_series(traffic_lab):
    lab, options = traffic_lab
    m = model()
    assert session.run("nft", m, options, apply=True).ok
    exposition = elb_registry({"nft": options}, Watch({"nft": options}, m, interval=0),
                              Bound())
    service = m.services[0].name
    on = {"service": service, "port": "80", "protocol": "tcp", "carrier": "telecom"}

    def scrape() -> tuple[str, dict[str, float]]:
        text = exposition.generate().decode()
        return text, {
            "conns": value(text, "dcnet_nft_service_connections_total", **on),
            **{f"{kind}_{d}": value(text, f"dcnet_nft_service_{kind}_total", direction=d,
                                    **on)
               for kind in ("packets", "bytes") for d in ("in", "out")}}

    text, before = scrape()
    assert value(text, "dcnet_exporter_source_up", source="nft") == 1
    assert before == dict.fromkeys(before, 0), before
    target = registry.create("nft", **options)
    os.unlink(target.fingerprint_path())      # a full read: its digest is of the listing
    with target.lock():
        pending = make_plan(target, model((2, 1, 1)))   # planned before the traffic
    assert not pending.payload.fast_path
    out = lab.run(CLIENT, lvslab.curl_loop(f"http://{VIP}/id", REQUESTS),
                  timeout=120).stdout
    answers = lvslab.parse_curl(out)
    assert [code for code, _ in answers] == ["200"] * REQUESTS, out
    text, after = scrape()
    assert after["conns"] == REQUESTS, text            # one service chain pass each
    # each exchange: SYN, ACK, request, FIN/ACKs in; SYN-ACK, answer, FIN/ACKs out
    assert after["packets_in"] >= 4 * REQUESTS and after["packets_out"] >= 3 * REQUESTS
    # IPv4 and TCP headers are 40 bytes at least; the answers' bodies came back out
    assert after["bytes_in"] >= 40 * after["packets_in"]
    assert after["bytes_out"] >= 40 * after["packets_out"] + sum(len(b) for _, b in answers)
    check = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                           capture_output=True)
    assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), \
        check.stdout + check.stderr
    # the counters moved, the table did not: the plan made before still applies
    # (its read digest leaves counter values out), and a second apply writes nothing
    with target.lock():
        assert apply_plan(target, pending).ok
    again = session.run("nft", model((2, 1, 1)), options, apply=True)
    assert again.plan.empty and not any(again.result.writes.values())
