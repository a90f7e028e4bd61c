"""``elbctl render realserver`` for an IPv6 DR real server, applied in a namespace: the VIPs
land on lo as /128, the carrier tables and ``from VIP`` rules exist, a second run changes
nothing, and the VIP is never answered for in NDP on the server's link (while the
server's own address is): no arp_ignore equivalent is needed."""

from __future__ import annotations

import pytest

from dcnet.lvs.realserver import render_all
from dcnet.model import parse_model
from tests.unit.test_realserver_ipv6 import model_text

pytestmark = pytest.mark.netns

RS, PEER = "2001:db8:20::11", "2001:db8:20::1"
VIP1, VIP2 = "2001:db8:1::10", "2001:db8:2::10"


def state(lab) -> tuple[str, str, str, str]:
    return (lab.run("rs", ["ip", "-6", "addr", "show", "dev", "lo"]).stdout,
            lab.run("rs", ["ip", "-6", "rule", "show"]).stdout,
            lab.run("rs", ["ip", "-6", "route", "show", "table", "101"]).stdout,
            lab.run("rs", ["ip", "-6", "route", "show", "table", "102"]).stdout)


def test_rendered_ipv6_dr_script_applies_and_the_vip_is_not_answered_in_ndp(lab_factory):
    lab = lab_factory({"hosts": ["rs", "peer"],
                       "links": [{"a": {"host": "rs", "ifname": "eth0",
                                        "addresses": [f"{RS}/64"]},
                                  "b": {"host": "peer", "ifname": "eth0",
                                        "addresses": [f"{PEER}/64"]}}]})
    model = parse_model(model_text(servers=f"['{RS}']"), source="rs6.yaml")
    script = render_all(model, servers=(RS,),
                        vias=(f"telecom={PEER}", f"unicom={PEER}"))
    lab.run("rs", ["sh", "-c", script])
    addrs, rules, t101, t102 = first = state(lab)
    assert f"inet6 {VIP1}/128" in addrs and f"inet6 {VIP2}/128" in addrs
    assert f"from {VIP1} lookup 101" in rules and f"from {VIP2} lookup 102" in rules
    assert f"default via {PEER} dev eth0" in t101 and f"default via {PEER} dev eth0" in t102
    lab.run("rs", ["sh", "-c", script])              # idempotent
    assert state(lab) == first
    # The server answers NDP for its own address but never for the VIP on lo.
    lab.run("peer", ["ip", "-6", "route", "add", f"{VIP1}/128", "dev", "eth0"])
    lab.run("peer", ["ping", "-6", "-c1", "-W2", RS])
    lost = lab.run("peer", ["ping", "-6", "-c2", "-W2", VIP1], check=False)
    assert lost.returncode != 0
    neigh = lab.run("peer", ["ip", "-6", "neigh", "show", VIP1]).stdout
    assert "lladdr" not in neigh
