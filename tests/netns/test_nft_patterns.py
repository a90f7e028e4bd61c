"""The flat layout's weight patterns on this kernel (dcnet.nft.patterns): uneven weights
answer through the pattern maps, VIP:ports of the same weights share one pattern's
picks, and the packet mark used as the scratch register leaves prerouting as 0 (the
restore chain right after DNAT; without it the scratch would be seen)."""

from __future__ import annotations

import collections
import json

import pytest

from dcnet.lab import lvs_lab as lvslab
from dcnet.nft import synth
from dcnet.nft.nftio import Nft
from dcnet.target import session
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
