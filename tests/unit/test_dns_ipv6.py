"""AAAA answers per carrier view (issue #21), rendering only (pure).

The rule (docs/dns.md): per service and address family, a view answers with its
carrier's own VIP of that family, else the default line's VIP of that family, else no
record of that type. So a carrier with only IPv4 VIPs answers AAAA with the default
line's IPv6 VIP, or not at all when the default line has none. Carrier client lists may
hold IPv6 prefixes (they become the view's ACL, matched by IPv6 clients).
"""

from __future__ import annotations

import pytest

from dcnet.dns.layout import answer, answers, layout
from dcnet.dns.render import ServerOptions, render
from dcnet.dns.settings import build
from dcnet.model import parse_model
from dcnet.model.errors import ModelError

ZONE = "elb.example.com"
WEB = "shop.prod.retail.sre"
PUSH = "push.prod.retail.sre"
MODEL = f"""version: 1
dns: {{zone: {ZONE}, pattern: "{{service}}.{{cluster}}.{{pdl}}.{{owt}}"}}
carriers:
  - {{name: telecom, uplink: ctc0, gateway: 198.51.100.1, gateway6: '2001:db8:1::1',
     table: 101, vip_ranges: [198.51.100.0/26, '2001:db8:10::/64'], cidrs: telecom.txt}}
  - {{name: unicom, uplink: cuc0, gateway: 198.51.100.65, table: 102,
     vip_ranges: [198.51.100.64/26], cidrs: unicom.txt}}
  - {{name: bgp, uplink: bgp0, gateway: 203.0.113.1, gateway6: '2001:db8:3::1', table: 103,
     vip_ranges: [203.0.113.0/26, '2001:db8:30::/64'], default: true}}
services:
  - job: job.web_service.shop_cluster.prod_pdl.retail_owt.sre_cop.example
    vips: {{telecom: [198.51.100.10, '2001:db8:10::10'], unicom: 198.51.100.74,
           bgp: [203.0.113.10, '2001:db8:30::10']}}
    ports: [{{port: 80, forward: nat}}]
    real_servers: [{{address: 10.0.0.1}}, {{address: 'fd00::1'}}]
  - job: job.push_service.push_cluster.prod_pdl.retail_owt.sre_cop.example
    vips: {{telecom: [198.51.100.11, '2001:db8:10::11'], bgp: 203.0.113.11}}
    ports: [{{port: 80, forward: nat}}]
    real_servers: [{{address: 10.0.0.1}}, {{address: 'fd00::1'}}]
"""
CIDRS = {"telecom.txt": "192.0.2.0/26\n2001:db8:c1::/64\n",
         "unicom.txt": "192.0.2.64/26\n2001:db8:c2::/64\n"}
# what each view answers: name -> {type: address}; no key = no record of that type
EXPECTED = {
    "telecom": {WEB: {"A": "198.51.100.10", "AAAA": "2001:db8:10::10"},
                PUSH: {"A": "198.51.100.11", "AAAA": "2001:db8:10::11"}},
    # IPv4-only line: AAAA of the default line, none where the default has no IPv6 VIP
    "unicom": {WEB: {"A": "198.51.100.74", "AAAA": "2001:db8:30::10"},
               PUSH: {"A": "203.0.113.11"}},
    "bgp": {WEB: {"A": "203.0.113.10", "AAAA": "2001:db8:30::10"},
            PUSH: {"A": "203.0.113.11"}},
}


def model(text: str = MODEL):
    return parse_model(text, source="dual.yaml", read_text=CIDRS.__getitem__)


def records(lay, view: str) -> dict:
    out: dict = {}
    for r in lay.zone(view, ZONE).data.records:
        assert r.type not in out.setdefault(r.name, {}), r     # one record a type
        out[r.name][r.type] = r.address
    return out


def test_each_view_answers_a_and_aaaa_by_the_stated_rule():
    lay = layout(model())
    assert {view: records(lay, view) for view in EXPECTED} == EXPECTED


def test_a_carrier_marked_down_answers_both_families_with_the_default_line():
    lay = layout(model(MODEL.replace("cidrs: telecom.txt}", "cidrs: telecom.txt, down: true}")))
    assert records(lay, "telecom") == EXPECTED["bgp"]
    # same content, but not with every carrier up: each keeps its own zone, so marking a
    # carrier down or up is a zone reload, never a re-declaration (BIND's reconfig window)
    assert lay.zone("telecom", ZONE).in_view is None
    assert lay.zone("bgp", ZONE).in_view is None


def test_a_default_line_without_ipv6_gives_no_aaaa_to_ipv4_only_lines():
    text = (MODEL.replace("bgp: [203.0.113.10, '2001:db8:30::10']", "bgp: 203.0.113.10"))
    lay = layout(model(text))
    assert records(lay, "unicom") == {WEB: {"A": "198.51.100.74"}, PUSH: {"A": "203.0.113.11"}}
    assert records(lay, "telecom") == EXPECTED["telecom"]     # its own IPv6 VIPs stay


def test_answer_keeps_its_meaning_and_answers_lists_both_families():
    m = model()
    unicom, web = m.carriers[1], m.services[0]
    assert str(answer(web, unicom, m)) == "198.51.100.74"
    assert [str(a) for a in answers(web, unicom, m)] == ["198.51.100.74", "2001:db8:30::10"]


def test_acls_hold_ipv6_prefixes_and_zone_files_aaaa_records():
    bundle = render(layout(model()), ServerOptions(directory="/b"), source="dual.yaml")
    conf = bundle.named_conf
    assert 'acl "carrier-telecom" {\n    192.0.2.0/26;\n    2001:db8:c1::/64;\n};' in conf
    assert 'acl "carrier-unicom" {\n    192.0.2.64/26;\n    2001:db8:c2::/64;\n};' in conf
    zone = bundle.zone_files[f"db.unicom.{ZONE}"]
    assert f"{WEB} IN AAAA 2001:db8:30::10\n" in zone and f"{WEB} IN A 198.51.100.74\n" in zone
    assert f"{PUSH} IN AAAA" not in zone


def test_ipv6_listen_addresses_go_to_listen_on_v6():
    server = build(directory="/b", listen="any,2001:db8:c1::53").server
    assert server.listen == ("any",) and server.listen_v6 == ("2001:db8:c1::53",)
    conf = render(layout(model()), server).named_conf
    assert "listen-on port 53 { any; };" in conf
    assert "listen-on-v6 port 53 { 2001:db8:c1::53; };" in conf
    assert build(directory="/b").server.listen_v6 == ("none",)
    assert build(directory="/b", listen="2001:db8::1").server.listen == ("none",)


def test_overlapping_ipv6_client_prefixes_of_two_carriers_are_refused():
    files = {**CIDRS, "unicom.txt": "192.0.2.64/26\n2001:db8:c1:0:8000::/65\n"}
    with pytest.raises(ModelError, match="2001:db8:c1:0:8000::/65"):
        parse_model(MODEL, source="dual.yaml", read_text=files.__getitem__)
    # an IPv4 prefix and an IPv6 prefix never overlap, whatever their numbers
    files = {**CIDRS, "unicom.txt": "192.0.2.64/26\n::c000:200/120\n"}
    parse_model(MODEL, source="dual.yaml", read_text=files.__getitem__)
