"""The flat layout's weight patterns on this kernel (dcnet.nft.patterns): uneven weights
answer through the pattern maps, VIP:ports of the same weights share one pattern's
picks, and the packet mark used as the scratch register leaves prerouting as 0 (the
restore chain right after DNAT; without it the scratch would be seen)."""

from __future__ import annotations

import collections
import json
import os

import pytest

from dcnet.lab import lvs_lab as lvslab
from dcnet.nft import synth
from dcnet.nft.nftio import Nft
from dcnet.plan import Action
from dcnet.target import apply_plan, make_plan, registry, session
from tests.netns import nft_lab

pytestmark = pytest.mark.netns

VIP = lvslab.VIPS["unicom"][0]
OTHER = "198.51.100.75"                  # same weights, another VIP: one pattern
CLIENT = "cli-unicom"
WEIGHTS = dict(zip(lvslab.SERVERS, (3, 2, 1), strict=True))
WATCH = """table inet watch {
    counter scratch { }
    chain after { type filter hook prerouting priority dstnat + 2; policy accept;
        meta mark & 0xc0000000 == 0xc0000000 counter name scratch
    }
}
"""


def scratch_seen(lab) -> int:
    out = json.loads(lab.run("director", ["nft", "-j", "list", "counter", "inet", "watch",
                                          "scratch"]).stdout)
    return next(i["counter"]["packets"] for i in out["nftables"] if "counter" in i)


def answers(lab, count: int) -> collections.Counter:
    out = lab.run(CLIENT, lvslab.curl_loop(f"http://{VIP}/id", count), timeout=120).stdout
    got = lvslab.parse_curl(out)
    assert len(got) == count
    return collections.Counter(body if code == "200" else f"failed {code}" for code, body in got)


def test_uneven_weights_go_through_one_shared_pattern_and_leave_no_scratch_mark(
        lab_factory, tmp_path):
    built = nft_lab.traffic_lab(lab_factory, tmp_path, VIP)
    lab, options = built.lab, built.options
    model = synth.model(synth.lab_model_text(VIP, WEIGHTS, target_port=lvslab.RS_HTTP,
                                             more=((OTHER, WEIGHTS),)))
    assert session.run("nft", model, options, apply=True).ok
    nft = Nft(options["netns"])
    listed = json.loads(nft.list_json("map", "inet", "dcnet", "picks"))["nftables"]
    assert len(next(i["map"] for i in listed if "map" in i)["elem"]) == 6   # W, not 2 W
    assert len(json.loads(nft.list_json("map", "inet", "dcnet", "wrp4"))["nftables"][1][
        "map"]["elem"]) == 6                                       # 3 indices per VIP:port
    lab.run("director", ["nft", "-f", "-"], input=WATCH)
    got = answers(lab, 60)
    assert set(got) == {"rs1", "rs2", "rs3"}, got                  # every backend, no failure
    assert got["rs1"] > got["rs3"], got                            # weight 3 against 1
    assert scratch_seen(lab) == 0
    # the restore rule is what clears it: without it, each new connection shows the mark
    lab.run("director", ["nft", "flush", "chain", "inet", "dcnet", "lbmark"])
    answers(lab, 5)
    assert scratch_seen(lab) == 5


def test_a_changed_fixed_chain_renders_the_table_anew(lab_factory, tmp_path):
    """A group chain flushed by hand (as an upgrade that changes the fixed chains leaves
    them): the full read plans the table anew (``rerender``: deleted and created in one
    transaction, since nft 1.0.6 cannot add a rule naming an existing ``wr4``), the
    apply succeeds, a full read then plans nothing and the VIP answers."""
    built = nft_lab.traffic_lab(lab_factory, tmp_path, VIP)
    lab, options = built.lab, built.options
    model = synth.model(synth.lab_model_text(VIP, WEIGHTS, target_port=lvslab.RS_HTTP,
                                             more=((OTHER, dict.fromkeys(WEIGHTS, 1)),)))
    assert session.run("nft", model, options, apply=True).ok
    lab.run("director", ["nft", "flush", "chain", "inet", "dcnet", "lb4-0"])
    target = registry.create("nft", **options)
    os.unlink(target.fingerprint_path())
    with target.lock():
        plan = make_plan(target, model)
        assert [c.kind for c in plan.changes if c.action is Action.DELETE] == ["rerender"]
        result = apply_plan(target, plan)
    assert result.ok and result.writes["nft_transactions"] == 1, result.to_text()[-1500:]
    check = registry.create("nft", **options)
    os.unlink(check.fingerprint_path())
    assert check.plan(model).empty
    got = answers(lab, 12)
    assert set(got) <= {"rs1", "rs2", "rs3"} and sum(got.values()) == 12, got
