"""netbench's IPVS mode, where the kernel has IPVS (directly, or in the kernel lab guest).

One short run of the ``ipvs`` mode over IPv4 and IPv6: client -> VIP (``10.69.0.100`` and
``fd00:6e62:69::64``) on the director -> real server by IPVS masquerading. The client
has no route to the real server's networks and nothing listens on the director, so every
successful sample crossed IPVS, of its family (iperf3's own record of the connection
names the VIP it reached). Figures from the emulated guest
mean nothing; this checks that the path is built, measured and removed.
"""

from __future__ import annotations

import textwrap

import pytest

from dcnet.netbench import engine, results, sockperf, topologies
from dcnet.netbench.definition import loads
from dcnet.sysio import netns

pytestmark = [pytest.mark.netns, pytest.mark.kernel("ip_vs")]

IPVS_RUN = textwrap.dedent("""\
    netbench: 1
    name: ipvs
    baseline: ipvs
    repeats: 1
    warmup_rounds: 0
    modes: [ipvs]
    families: [ipv4, ipv6]
    tests:
      - {name: tcp-1, kind: tcp, duration: 1, omit: 0}
      - {name: udp, kind: udp, duration: 1, omit: 0, bitrate: 100M}
      - {name: latency, kind: latency, protocol: udp, duration: 1}
      - {name: rr, kind: rr, protocol: tcp, duration: 1}
    """)


def test_ipvs_mode_runs_through_the_vip_over_both_families(tmp_path):
    outcome = engine.run(loads(IPVS_RUN, "ipvs.yaml"), str(tmp_path))
    data = results.load(outcome.path)
    mode = data["modes"]["ipvs"]
    assert mode["status"] == "ok", mode
    assert mode["target"] == topologies.IPVS_VIP and mode["server_netns"].endswith("-r")
    families = mode["families"]
    assert families["ipv6"]["status"] == "ok", families["ipv6"]
    assert families["ipv6"]["target"] == topologies.IPVS_VIP6
    assert outcome.state == "complete"
    assert [s["error"] for s in data["samples"] if not s["ok"]] == []
    latency_v6 = sockperf.ipv6_unsupported(data["environment"]["tools"]["sockperf"]) is None
    ran = {(s["family"], s["test"]) for s in data["samples"]}
    wanted = {(f, t) for f in ("ipv4", "ipv6") for t in ("tcp-1", "udp", "rr")}
    assert wanted | {("ipv4", "latency")} <= ran
    assert (("ipv6", "latency") in ran) == latency_v6
    for sample in data["samples"]:
        vip = families[sample["family"]]["target"]
        if sample["kind"] in ("tcp", "udp"):
            assert sample["details"]["remote_host"] == vip
    assert data["run"]["teardown"]["namespaces_left"] == []
    assert not set(mode["namespaces"]) & set(netns.list_names())
