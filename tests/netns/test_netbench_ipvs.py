"""netbench's IPVS mode, where the kernel has IPVS (directly, or in the kernel lab guest).

One short run of the ``ipvs`` mode: client -> VIP on the director -> real server by
IPVS masquerading. The client has no route to the real server's network and nothing
listens on the director, so every successful sample crossed IPVS. Figures from the
emulated guest mean nothing; this checks that the path is built, measured and removed.
"""

from __future__ import annotations

import textwrap

import pytest

from dcnet.netbench import engine, results, topologies
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
    tests:
      - {name: tcp-1, kind: tcp, duration: 1, omit: 0}
      - {name: udp, kind: udp, duration: 1, omit: 0, bitrate: 100M}
      - {name: latency, kind: latency, protocol: udp, duration: 1}
    """)


def test_ipvs_mode_runs_through_the_vip(tmp_path):
    outcome = engine.run(loads(IPVS_RUN, "ipvs.yaml"), str(tmp_path))
    data = results.load(outcome.path)
    mode = data["modes"]["ipvs"]
    assert mode["status"] == "ok", mode
    assert mode["target"] == topologies.IPVS_VIP and mode["server_netns"].endswith("-r")
    assert outcome.state == "complete"
    assert [s["error"] for s in data["samples"] if not s["ok"]] == []
    assert {s["test"] for s in data["samples"]} == {"tcp-1", "udp", "latency"}
    assert data["run"]["teardown"]["namespaces_left"] == []
    assert not set(mode["namespaces"]) & set(netns.list_names())
