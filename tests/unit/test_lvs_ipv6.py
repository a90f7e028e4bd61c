"""Dual-stack carriers in the model and what the LVS back end derives from them (pure):
``gateway6``, a carrier's IPv4 and IPv6 VIP (``vips: {telecom: [v4, v6]}``), IPVS pairing
each VIP with real servers of its family, a default route per family in the carrier
table, a rule per VIP, and the keepalived rendering (per-family VRRP instances)."""

from __future__ import annotations

import pytest

from dcnet.lab import lvs_lab as lvslab
from dcnet.lvs import keepalived, state
from dcnet.lvs.layout import layouts
from dcnet.model import parse_model
from dcnet.model.errors import ModelError

BASE = """version: 1
carriers:
  - {name: telecom, uplink: ctc0, gateway: 198.51.100.1, GW6 table: 101,
     vip_ranges: [198.51.100.0/26, '2001:db8:10::/64'], default: true}
services:
  - job: job.web_service.shop_cluster.prod_pdl.retail_owt.sre_cop.example
    vips: {telecom: VIPS}
    ports: [{port: 80, forward: FWD}]
    real_servers: SERVERS
"""


def text(gw6="gateway6: '2001:db8:1::1',", vips="[198.51.100.10, '2001:db8:10::10']",
         forward="nat", servers="[{address: 10.0.0.1}, {address: 'fd00::1'}]") -> str:
    return (BASE.replace("GW6 ", gw6 + " ").replace("VIPS", vips).replace("FWD", forward)
            .replace("SERVERS", servers))


def test_a_dual_stack_carrier_and_service_load():
    model = parse_model(text())
    carrier = model.carriers[0]
    assert [str(g) for g in carrier.gateways()] == ["198.51.100.1", "2001:db8:1::1"]
    assert str(carrier.gateway_of(6)) == "2001:db8:1::1"
    service = model.services[0]
    assert [str(v) for _, v in service.vips] == ["198.51.100.10", "2001:db8:10::10"]
    assert str(service.vip("telecom")) == "198.51.100.10"
    assert str(service.vip("telecom", 6)) == "2001:db8:10::10"


@pytest.mark.parametrize("change, message", [
    ({"gw6": ""}, "VIP 2001:db8:10::10 is IPv6 but carrier 'telecom' has no IPv6 gateway"),
    ({"gw6": "gateway6: 198.51.100.2,"}, "gateway6 is the IPv6 next hop"),
    ({"vips": "[198.51.100.10, 198.51.100.11]"}, "at most one IPv4 and one IPv6 VIP"),
])
def test_dual_stack_mistakes_are_refused(change, message):
    with pytest.raises(ModelError, match=message):
        parse_model(text(**change))


def test_tun_may_pair_families_and_a_list_of_one_is_an_address():
    parse_model(text(forward="tun", servers="[{address: 10.0.0.1}]"))
    model = parse_model(text(gw6="", vips="[198.51.100.10]", servers="[{address: 10.0.0.1}]"))
    assert model.services[0].vips == parse_model(text(
        gw6="", vips="198.51.100.10", servers="[{address: 10.0.0.1}]")).services[0].vips


def test_ipvs_pairs_each_vip_with_servers_of_its_family():
    desired = state.desired_ipvs(layouts(lvslab.model(ipv6=True)))
    dests = [key for kind, key in desired if kind == "dest"]
    assert dests and all((":" in vip) == (":" in rip) for _p, vip, _port, rip, _rp in dests)
    assert ("dest", ("tcp", "2001:db8:10::10", 80, "fd00:20::11", 8080)) in desired
    tun = state.desired_ipvs(layouts(parse_model(text(forward="tun"))))
    assert ("dest", ("tcp", "2001:db8:10::10", 80, "10.0.0.1", 80)) in tun


def test_routing_has_a_default_route_per_family_and_a_rule_per_vip():
    desired = state.desired_routing(lvslab.model(ipv6=True))
    assert desired[("route", (101, "::/0"))] == {"gateway": "2001:db8:1::1", "dev": "ctc0"}
    assert desired[("route", (101, "0.0.0.0/0"))] == {"gateway": "198.51.100.1", "dev": "ctc0"}
    assert desired[("rule", ("2001:db8:20::11",))] == {"table": 102, "priority": 20000}
    assert desired[("vip", ("2001:db8:20::11",))] == {"prefixlen": 128}
    assert len([k for k in desired if k[0] == "route"]) == 4


def test_keepalived_puts_each_family_in_its_own_vrrp_instance():
    context = keepalived.context(lvslab.model(ipv6=True))
    groups = {g["name"]: g for g in context["groups"]}
    v6 = [g for g in groups.values() if g["family"] == 6]
    v4 = [g for g in groups.values() if g["family"] == 4]
    assert len(v6) == len(v4) >= 1
    assert all(":" in v["address"] for g in v6 for v in g["vips"])
    assert all(":" not in v["address"] for g in v4 for v in g["vips"])
    routes6 = [r for g in v6 for r in g["routes"]]
    assert {(r["gateway"], r["table"]) for r in routes6} == {("2001:db8:1::1", 101),
                                                              ("2001:db8:2::1", 102)}
    servers = {(vs["vip"], vs["port"]): vs for vs in context["virtual_servers"]}
    assert [r["address"] for r in servers[("2001:db8:10::10", 80)]["real_servers"]] == list(
        lvslab.SERVERS6)
    text_ = keepalived.render(lvslab.model(ipv6=True))
    assert "vrrp_instance telecom-v6" in text_ and "    version 3\n" in text_
    assert "virtual_server 2001:db8:10::10 80" in text_


@pytest.mark.parametrize("vips, message", [
    ("[]", "a VIP or a list of one IPv4 and one IPv6 VIP, not 0 items"),
    ("[198.51.100.10, '2001:db8:10::10', 198.51.100.11]", "not 3 items"),
    ("[[198.51.100.10]]", "is not an IP address"),
])
def test_a_carrier_vip_list_is_one_or_two_addresses(vips, message):
    with pytest.raises(ModelError, match=message):
        parse_model(text(vips=vips))
