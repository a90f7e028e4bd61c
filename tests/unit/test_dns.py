"""Unit tests of carrier-aware DNS: layout, rendering, serials, list checks, plan logic."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from click.testing import CliRunner

from dcnet.cli.elbctl import cli
from dcnet.dns import carriers as lists
from dcnet.dns.backend import needs_reconfig, rndc_commands, state_of_installed, state_of_layout
from dcnet.dns.installed import InstalledError, parse_named_conf, parse_zone_file
from dcnet.dns.layout import LayoutError, layout
from dcnet.dns.render import ServerOptions, render
from dcnet.dns.serial import Installed, next_serial
from dcnet.model import parse_model
from dcnet.plan import Plan, diff
from tests.unit.model_fixtures import JOB_A, model_text, read_file

pytestmark = pytest.mark.unit

TODAY = dt.date(2024, 5, 17)
FILES = {"telecom.txt": "192.0.2.0/26\n100.64.1.0/24\n", "unicom.txt": "192.0.2.64/26\n"}
NAME_A = "shop.prod.retail.sre"        # relative to the zone elb.internal
NAME_B = "checkout.prod.retail.sre"


def with_unicom(data):
    data["carriers"].insert(1, {"name": "unicom", "uplink": "cuc0", "gateway": "198.51.100.65",
                                "table": 102, "vip_ranges": ["198.51.100.64/26"],
                                "cidrs": "unicom.txt"})


def model(*mutations, files=None):
    def mutate(data):
        with_unicom(data)
        for m in mutations:
            m(data)
    return parse_model(model_text(mutate), read_text=read_file(files or FILES))


def records(lay, view):
    return {r.name: r.address for r in lay.zone(view, "elb.internal").data.records}


def bundle_of(m, installed=None, today=TODAY):
    return render(layout(m), ServerOptions("/var/lib/dcnet-dns", key_file="/k/rndc.key"),
                  source="m.yaml", installed=installed, today=today)


# -- layout: views, fallback, sharing


def test_a_view_per_carrier_list_in_model_order_and_the_default_view_last():
    lay = layout(model())
    assert [(v.name, v.match) for v in lay.views] == [
        ("telecom", "carrier-telecom"), ("unicom", "carrier-unicom"), ("bgp", "any")]
    assert [(a.carrier, [str(p) for p in a.prefixes]) for a in lay.acls] == [
        ("telecom", ["192.0.2.0/26", "100.64.1.0/24"]), ("unicom", ["192.0.2.64/26"])]


def test_each_view_answers_its_carrier_vip_or_falls_back_to_the_default():
    lay = layout(model())
    assert records(lay, "telecom") == {NAME_A: "198.51.100.10", NAME_B: "203.0.113.11"}
    assert records(lay, "bgp") == {NAME_A: "203.0.113.10", NAME_B: "203.0.113.11"}


def test_a_carrier_marked_down_answers_with_the_default_line():
    def down(data):
        data["carriers"][0]["down"] = True
    lay = layout(model(down))
    assert records(lay, "telecom") == records(lay, "bgp")
    assert any("telecom is marked down" in n for n in lay.notes)


def test_identical_zones_are_declared_once_and_shared_with_in_view():
    lay = layout(model())       # unicom has no own VIP: same content as the default view
    unicom, bgp, telecom = (lay.zone(v, "elb.internal") for v in ("unicom", "bgp", "telecom"))
    assert (unicom.file, unicom.in_view) == ("db.unicom.elb.internal", None)
    assert (bgp.file, bgp.in_view) == (None, "unicom")
    assert (telecom.file, telecom.in_view) == ("db.telecom.elb.internal", None)


def test_a_carrier_without_a_client_list_gets_no_view():
    def no_list(data):
        del data["carriers"][1]["cidrs"]
    lay = layout(model(no_list))
    assert [v.name for v in lay.views] == ["telecom", "bgp"]
    assert any("unicom has no client CIDR list" in n for n in lay.notes)


def test_a_service_named_like_the_ns_record_is_refused():
    def clash(data):
        data["dns"] = {"pattern": "{service}-ns"}
        data["services"][0]["job"] = JOB_A.replace("service.shop", "service.dcnet")
    with pytest.raises(LayoutError, match="dcnet-ns"):
        layout(model(clash))


def test_ipv6_vips_get_aaaa_records():
    def v6(data):
        data["carriers"][2]["vip_ranges"] = ["2001:db8::/64"]
        data["carriers"][2]["gateway"] = "2001:db8::1"
        for s, vip in zip(data["services"], ("2001:db8::10", "2001:db8::11"), strict=True):
            s["vips"]["bgp"] = vip
        data["services"][1]["real_servers"] = [{"address": "2001:db8:1::3"}]
    lay = layout(model(v6))
    got = {(r.name, r.type) for r in lay.zone("bgp", "elb.internal").data.records}
    assert got == {(NAME_A, "AAAA"), (NAME_B, "AAAA")}


# -- rendering and reading back


def test_named_conf_has_acls_views_with_match_clients_and_the_default_last():
    conf = bundle_of(model()).named_conf
    assert 'acl "carrier-telecom" {\n    192.0.2.0/26;\n    100.64.1.0/24;\n};' in conf
    assert conf.index('view "telecom"') < conf.index('view "unicom"') < conf.index('view "bgp"')
    assert 'match-clients { "carrier-unicom"; };' in conf
    assert 'view "bgp" {\n    match-clients { any; };' in conf
    assert 'zone "elb.internal" { in-view "unicom"; };' in conf
    assert 'include "/k/rndc.key";' in conf and 'keys { "rndc-key"; }' in conf


def test_zone_file_holds_soa_serial_digest_and_records():
    b = bundle_of(model())
    text = b.zone_files["db.telecom.elb.internal"]
    assert "( 2024051700 " in text
    assert f"\n{NAME_A} IN A 198.51.100.10\n" in text
    assert parse_zone_file(text) == Installed(
        2024051700, layout(model()).zone("telecom", "elb.internal").data.digest())


def test_rendered_config_reads_back_as_the_same_state():
    b = bundle_of(model())
    config = parse_named_conf(b.named_conf)
    config.zone_files = {k: parse_zone_file(b.zone_files[d["file"]])
                         for k, d in config.zones.items() if d["file"]}
    assert diff(state_of_installed(config), state_of_layout(b.layout, b)) == []
    assert config.acls["telecom"] == (ipaddress.ip_network("192.0.2.0/26"),
                                      ipaddress.ip_network("100.64.1.0/24"))


def test_a_named_conf_not_written_by_dcnet_is_refused():
    with pytest.raises(InstalledError, match="not written by dcnet"):
        parse_named_conf('options { directory "/var/cache/bind"; };\n')


# -- serials


def test_serial_stays_when_content_is_unchanged():
    installed = {("telecom", "z"): Installed(2024010105, "abc")}
    assert next_serial(("telecom", "z"), "abc", installed, TODAY) == 2024010105


def test_serial_moves_to_todays_base_when_content_changes():
    installed = {("telecom", "z"): Installed(2024010105, "abc")}
    assert next_serial(("telecom", "z"), "new", installed, TODAY) == 2024051700


def test_serial_increments_for_a_second_change_on_the_same_day():
    installed = {("telecom", "z"): Installed(2024051700, "abc")}
    assert next_serial(("telecom", "z"), "new", installed, TODAY) == 2024051701


def test_a_new_zone_file_gets_a_serial_above_every_view_of_that_zone():
    installed = {("bgp", "z"): Installed(2024051709, "x"), ("bgp", "other"): Installed(9, "y")}
    assert next_serial(("unicom", "z"), "new", installed, TODAY) == 2024051710


def test_rerendering_unchanged_model_keeps_every_serial_and_a_change_moves_one():
    first = bundle_of(model(), today=dt.date(2024, 1, 1))
    installed = {k: Installed(s, layout(model()).zone(*k).data.digest())
                 for k, s in first.serials.items()}
    assert bundle_of(model(), installed).serials == first.serials

    def move(data):
        data["services"][0]["vips"]["telecom"] = "198.51.100.12"
    changed = bundle_of(model(move), installed).serials
    assert changed[("telecom", "elb.internal")] == 2024051700
    assert changed[("unicom", "elb.internal")] == first.serials[("unicom", "elb.internal")]


# -- carrier list checks


def carrier(name, *cidrs, default=False):
    from dcnet.model import Carrier
    return Carrier(name, "x0", ipaddress.ip_address("192.0.2.1"), 100, (), f"{name}.txt",
                   tuple(ipaddress.ip_network(c) for c in cidrs), default)


def test_overlap_between_carriers_is_reported_with_both_prefixes_and_files():
    found = lists.overlaps([carrier("telecom", "10.0.0.0/24", "10.9.0.0/16"),
                            carrier("unicom", "10.0.0.128/25", "10.10.0.0/16")])
    assert [str(o) for o in found] == [
        "client prefix 10.0.0.128/25 of carrier 'unicom' (unicom.txt) overlaps 10.0.0.0/24 of "
        "carrier 'telecom' (telecom.txt): the first matching view would win silently"]


def test_overlap_found_when_the_wider_prefix_comes_later_and_across_many_prefixes():
    small = [f"10.{i}.0.0/16" for i in range(200)]
    found = lists.overlaps([carrier("a", *small), carrier("b", "11.0.0.0/8", "10.77.3.0/24"),
                            carrier("c", "10.0.0.0/8")])
    pairs = {(o.first.name, str(o.first_prefix), o.second.name, str(o.second_prefix))
             for o in found}
    assert ("a", "10.77.0.0/16", "b", "10.77.3.0/24") in pairs
    assert ("a", "10.0.0.0/16", "c", "10.0.0.0/8") in pairs
    assert ("b", "10.77.3.0/24", "c", "10.0.0.0/8") in pairs
    assert len(pairs) == 200 + 1 + 1


def test_no_overlap_within_a_carrier_or_across_address_families():
    assert lists.overlaps([carrier("a", "10.0.0.0/8", "10.1.0.0/16"),
                           carrier("b", "2001:db8::/32", "11.0.0.0/8")]) == []
    with pytest.raises(lists.CarrierListError, match=r"10\.0\.0\.0/8 of carrier 'a'"):
        lists.check_overlaps([carrier("a", "10.0.0.0/8"), carrier("b", "10.0.0.0/8")])


def nets(*texts):
    return tuple(ipaddress.ip_network(t) for t in texts)


TEN = nets(*(f"10.{i}.0.0/16" for i in range(10)))


def test_change_guard_allows_up_to_30_percent_and_refuses_more():
    assert lists.change_guard({"t": TEN}, {"t": TEN[3:]}) == []                # 30%
    with pytest.raises(lists.CarrierListError, match=r"'t'.*40% of its 10 installed"):
        lists.change_guard({"t": TEN}, {"t": TEN[4:]})


def test_change_guard_counts_additions_and_a_dropped_carrier():
    with pytest.raises(lists.CarrierListError, match=r"\+4 -0"):
        lists.change_guard({"t": TEN}, {"t": TEN + nets(*(f"11.{i}.0.0/16" for i in range(4)))})
    with pytest.raises(lists.CarrierListError, match="100%"):
        lists.change_guard({"t": TEN}, {})
    assert lists.change_guard({}, {"new": TEN}) == []                         # nothing installed


def test_change_guard_passes_when_forced_and_reports_what_it_let_through():
    forced = lists.change_guard({"t": TEN}, {"t": nets("12.0.0.0/8")}, force=True)
    assert [(c.carrier, c.added, c.removed) for c in forced] == [("t", 1, 10)]


# -- plan logic


def installed_state(b):
    config = parse_named_conf(b.named_conf)
    config.zone_files = {k: parse_zone_file(b.zone_files[d["file"]])
                         for k, d in config.zones.items() if d["file"]}
    return config, state_of_installed(config)


def plan_between(before_model, after_model):
    before = bundle_of(before_model)
    config, current = installed_state(before)
    after = bundle_of(after_model, config.zone_files)
    changes = diff(current, state_of_layout(after.layout, after))
    return Plan.build("dns", changes, ("server", "acl", "view", "zone"))


def test_changing_one_service_vip_reloads_only_that_view_zone():
    def move(data):
        data["services"][0]["vips"]["telecom"] = "198.51.100.12"
    plan = plan_between(model(), model(move))
    assert [(c.kind, c.key) for c in plan.changes] == [("zone", ("telecom", "elb.internal"))]
    assert rndc_commands(plan.changes) == ["rndc reload elb.internal IN telecom"]


def test_a_new_carrier_view_needs_reconfig_and_no_reload():
    def add_mobile(data):
        data["carriers"].insert(2, {"name": "mobile", "uplink": "cm0",
                                    "gateway": "198.51.100.129", "table": 103,
                                    "vip_ranges": ["198.51.100.128/26"], "cidrs": "mobile.txt"})
    files = {**FILES, "mobile.txt": "192.0.2.128/26\n"}
    plan = plan_between(model(), model(add_mobile, files=files))
    assert {(c.action.value, c.kind, c.key) for c in plan.changes} >= {
        ("create", "acl", ("mobile",)), ("create", "view", ("mobile",)),
        ("create", "zone", ("mobile", "elb.internal"))}
    assert rndc_commands(plan.changes) == ["rndc reconfig"]


def test_unsharing_a_zone_needs_reconfig_then_a_reload():
    def unicom_vip(data):
        data["services"][1]["vips"]["unicom"] = "198.51.100.70"
    plan = plan_between(model(), model(unicom_vip))
    keys = {c.key: c for c in plan.changes}
    assert needs_reconfig(keys[("bgp", "elb.internal")])           # in-view -> own file
    assert rndc_commands(plan.changes) == ["rndc reconfig", "rndc reload elb.internal IN bgp",
                                           "rndc reload elb.internal IN unicom"]


def test_unchanged_model_plans_nothing():
    assert plan_between(model(), model()).empty


# -- elbctl wiring


def test_elbctl_has_render_dns_and_dns_options_on_plan_and_apply():
    runner = CliRunner()
    assert "named.conf" in runner.invoke(cli, ["render", "dns", "--help"]).output
    for command in ("plan", "apply"):
        out = runner.invoke(cli, [command, "--help"]).output
        assert "--force" in out and "--dns-dir" in out
