"""The conformance suite (tests/conformance.py) against ``--target nft`` on this host.

The director is programmed in-process (``session.run("nft", ...)``) with carrier routing
(``--nft-carrier-routing``: connection marks, fwmark rules, carrier default routes); the
nft target does not manage addresses, so the VIPs go on the director's ``lo`` here.
"""

from __future__ import annotations

import shutil

import pytest

from tests import conformance

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def director(tmp_path_factory):
    if shutil.which("busybox") is None:
        pytest.skip("busybox is not installed")
    with conformance.traffic_lab() as lab:
        for vip in conformance.VIP.values():
            lab.run("director", ["ip", "addr", "add", f"{vip}/32", "dev", "lo"])
        options = {"netns": lab.netns("director"),
                   "state_dir": str(tmp_path_factory.mktemp("nft-state")),
                   "carrier_routing": True}
        yield conformance.Director("nft", options, lab)


class TestNftConformance(conformance.Conformance):
    pass
