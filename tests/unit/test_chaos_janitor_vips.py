"""The janitor's model part (pure): carrier VIPs no DNS view answers are listed with a
reason; VIPs a view answers are not, nor those of a carrier marked down or withdrawn by
health (temporary); nothing is removed with --apply (the model owns the VIPs); and
``elbctl chaos unused -f MODEL --vips`` prints the plan and exits 2."""

from __future__ import annotations

import json
from dataclasses import replace

from click.testing import CliRunner

from dcnet.chaos import janitor_vips
from dcnet.cli.elbctl import cli
from dcnet.dns.layout import answered, layout
from dcnet.model import parse_model

WEB = "shop.prod.retail.sre"
MODEL = """version: 1
dns: {zone: elb.example.com}
carriers:
  - {name: telecom, uplink: ctc0, gateway: 198.51.100.1, gateway6: '2001:db8:1::1',
     table: 101, vip_ranges: [198.51.100.0/26, '2001:db8:10::/64'], cidrs: telecom.txt}
  - {name: unicom, uplink: cuc0, gateway: 198.51.100.65, table: 102,
     vip_ranges: [198.51.100.64/26]}
  - {name: bgp, uplink: bgp0, gateway: 203.0.113.1, table: 103,
     vip_ranges: [203.0.113.0/26], default: true}
services:
  - job: job.web_service.shop_cluster.prod_pdl.retail_owt.sre_cop.example
    vips: {telecom: [198.51.100.10, '2001:db8:10::10'], unicom: 198.51.100.74,
           bgp: 203.0.113.10}
    ports: [{port: 80, forward: nat}]
    real_servers: [{address: 10.0.0.1}]
"""
CIDRS = {"telecom.txt": "192.0.2.0/26\n2001:db8:c1::/64\n",
         "unicom.txt": "192.0.2.64/26\n"}


def model(text: str = MODEL):
    return parse_model(text, source="vips.yaml", read_text=CIDRS.__getitem__)


def unused(made, apply: bool = False):
    return janitor_vips.unused(made, answered(made), apply=apply)


def test_a_vip_of_a_carrier_without_a_view_is_unused_with_its_reason():
    report = unused(model())
    assert [(v.service, v.carrier, v.vip, v.name) for v in report.vips] == [
        ("job.web_service.shop_cluster.prod_pdl.retail_owt.sre_cop.example", "unicom",
         "198.51.100.74", WEB)]
    assert "no client CIDR list" in report.vips[0].reason
    # the layout agrees: no view answers 198.51.100.74
    addresses = {r.address for z in layout(model()).zones for r in z.data.records}
    assert "198.51.100.74" not in addresses and "2001:db8:10::10" in addresses


def test_every_vip_answered_when_the_carrier_has_a_view():
    with_list = MODEL.replace("vip_ranges: [198.51.100.64/26]}",
                              "vip_ranges: [198.51.100.64/26], cidrs: unicom.txt}")
    assert unused(model(with_list)).vips == []


def test_a_carrier_marked_down_or_withdrawn_is_not_unused():
    with_list = MODEL.replace("vip_ranges: [198.51.100.64/26]}",
                              "vip_ranges: [198.51.100.64/26], cidrs: unicom.txt}")
    down = model(with_list.replace("cidrs: telecom.txt}", "cidrs: telecom.txt, down: true}"))
    # telecom's clients get bgp's VIP now, yet its VIPs stay answered when it is up
    assert "198.51.100.10" not in {r.address for z in layout(down).zones
                                   for r in z.data.records}
    assert unused(down).vips == []
    base = model(with_list)
    service = base.services[0].name
    withdrawn = replace(base, dns=replace(base.dns, withdrawn=frozenset({(service, "unicom")})))
    assert unused(withdrawn).vips == []


def test_apply_removes_nothing_and_says_so():
    report = unused(model(), apply=True)
    assert len(report.vips) == 1 and report.applied
    text = report.to_text()
    assert "unicom 198.51.100.74" in text and "not removed: the model owns" in text


def test_cli_prints_the_plan_and_exits_2(tmp_path):
    (tmp_path / "m.yaml").write_text(MODEL)
    for name, text in CIDRS.items():
        (tmp_path / name).write_text(text)
    runner = CliRunner()
    result = runner.invoke(cli, ["chaos", "unused", "-f", str(tmp_path / "m.yaml"), "--vips",
                                 "-o", "json"])
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)
    assert [v["vip"] for v in report["vips"]] == ["198.51.100.74"]
    clean = MODEL.replace("unicom: 198.51.100.74,", "")
    (tmp_path / "m.yaml").write_text(clean)
    again = runner.invoke(cli, ["chaos", "unused", "-f", str(tmp_path / "m.yaml"), "--vips"])
    assert again.exit_code == 0, again.output
    assert "0 carrier VIPs" in again.stdout
