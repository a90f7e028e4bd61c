"""Unit tests of carrier-aware DNS: layout, rendering, serials, list checks, plan logic.

The plan tests drive the real :meth:`DNSTarget.plan` on a BIND directory in a temporary
directory (named-checkzone / named-checkconf -z run on the staged copy; no named runs:
applying against a real named is tests/netns/test_dns.py's job).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path
from types import MappingProxyType

import pytest
from click.testing import CliRunner

from dcnet.cli.elbctl import cli
from dcnet.dns import bind
from dcnet.dns import carriers as lists
from dcnet.dns.backend import (
    DNSTarget,
    conf_step,
    needs_reconfig,
    rndc_commands,
    state_of_installed,
    state_of_layout,
)
from dcnet.dns.installed import InstalledError, parse_named_conf, parse_zone_file
from dcnet.dns.layout import layout
from dcnet.dns.output import render_to_directory
from dcnet.dns.render import ServerOptions, render
from dcnet.dns.serial import Installed, next_serial
from dcnet.model import ModelError, parse_model
from dcnet.plan import Action, diff
from dcnet.sysio import proc
from dcnet.target import StalePlan, TargetError, TooMuchChange, apply_plan, registry
from dcnet.target.registry import resolve_options
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
    # the same content now, not with every carrier up: no sharing (a withdrawal or restore
    # must be a reload of telecom's zone, never a re-declaration of bgp's)
    assert lay.zone("bgp", "elb.internal").in_view == "unicom"
    assert lay.zone("telecom", "elb.internal").file == "db.telecom.elb.internal"


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
    with pytest.raises(ModelError, match="is the zone's name server record"):
        model(clash)         # refused by validation now (issue #15), before any layout


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


@pytest.fixture(scope="module")
def rndc_key(tmp_path_factory) -> str:
    """A real rndc key (named-checkconf reads the include)."""
    path = str(tmp_path_factory.mktemp("key") / "rndc.key")
    proc.run(["rndc-confgen", "-a", "-c", path, "-k", "rndc-key"])
    return path


@pytest.fixture
def bind_dir(tmp_path) -> str:
    return str(tmp_path / "bind")


def install(m, directory: str, key: str) -> None:
    """Render ``m`` into ``directory`` as ``elbctl render dns`` does (unchecked)."""
    render_to_directory(m, ServerOptions(directory, key_file=key), check=False)


def target(directory: str, key: str, **options) -> DNSTarget:
    return DNSTarget(directory=directory, key_file=key, today=TODAY, **options)


def files_of(directory: str) -> dict:
    return {n: Path(directory, n).read_text() for n in sorted(os.listdir(directory))
            if n.startswith(("named.conf", "db."))}


@pytest.fixture
def plan_between(bind_dir, rndc_key):
    """The real plan of ``after_model`` against ``before_model`` installed."""
    def plan_between(before_model, after_model, **options):
        install(before_model, bind_dir, rndc_key)
        return target(bind_dir, rndc_key, **options).plan(after_model)
    return plan_between


def test_changing_one_service_vip_reloads_only_that_view_zone(plan_between):
    def move(data):
        data["services"][0]["vips"]["telecom"] = "198.51.100.12"
    plan = plan_between(model(), model(move))
    assert [(c.kind, c.key) for c in plan.changes] == [("zone", ("telecom", "elb.internal"))]
    assert rndc_commands(plan.changes) == ["rndc reload elb.internal IN telecom"]


def test_a_new_carrier_view_needs_reconfig_and_no_reload(plan_between):
    plan = plan_between(model(), model(add_mobile, files=MOBILE_FILES))
    assert {(c.action.value, c.kind, c.key) for c in plan.changes} >= {
        ("create", "acl", ("mobile",)), ("create", "view", ("mobile",)),
        ("create", "zone", ("mobile", "elb.internal"))}
    assert rndc_commands(plan.changes) == ["rndc reconfig"]


def test_unsharing_a_zone_needs_reconfig_then_a_reload(plan_between):
    def unicom_vip(data):
        data["services"][1]["vips"]["unicom"] = "198.51.100.70"
    plan = plan_between(model(), model(unicom_vip))
    keys = {c.key: c for c in plan.changes}
    assert needs_reconfig(keys[("bgp", "elb.internal")])           # in-view -> own file
    assert rndc_commands(plan.changes) == ["rndc reconfig", "rndc reload elb.internal IN bgp",
                                           "rndc reload elb.internal IN unicom"]


@pytest.mark.parametrize("carrier", [0, 1])
def test_marking_a_carrier_down_and_up_only_reloads_its_zone(plan_between, carrier):
    """telecom (own VIPs) and unicom (none: its zone is the default's) alike: no reconfig,
    no other view's zone touched, either way."""
    def down(data):
        data["carriers"][carrier]["down"] = True
    up_model, down_model = model(), model(down)
    view = up_model.carriers[carrier].name
    for old, new in ((up_model, down_model), (down_model, up_model)):
        plan = plan_between(old, new)
        assert all(c.key == (view, "elb.internal") for c in plan.changes), plan.changes
        assert rndc_commands(plan.changes) in ([], [f"rndc reload elb.internal IN {view}"])


def test_unchanged_model_plans_nothing(plan_between):
    assert plan_between(model(), model()).empty


def add_mobile(data):
    data["carriers"].insert(2, {"name": "mobile", "uplink": "cm0",
                                "gateway": "198.51.100.129", "table": 103,
                                "vip_ranges": ["198.51.100.128/26"], "cidrs": "mobile.txt"})


MOBILE_FILES = {**FILES, "mobile.txt": "192.0.2.128/26\n"}


def move_telecom(data):
    data["services"][0]["vips"]["telecom"] = "198.51.100.12"


def test_plan_notes_say_what_apply_runs_and_that_bind_accepted_the_files(plan_between):
    plan = plan_between(model(), model(move_telecom))
    assert "apply runs: rndc reload elb.internal IN telecom" in plan.notes
    assert ("checked: named-checkzone and named-checkconf -z accept the rendered files"
            in plan.notes)
    assert plan.objects == 9 and plan.read_digest


def test_a_config_bind_rejects_fails_the_plan(bind_dir, rndc_key):
    install(model(), bind_dir, rndc_key)
    with pytest.raises(bind.BindError, match="named-checkconf -z failed"):
        target(bind_dir, rndc_key, listen="no-such-acl").plan(model(move_telecom))


def test_plan_keeps_nothing_on_the_instance_and_carries_an_immutable_payload(bind_dir,
                                                                               rndc_key):
    install(model(), bind_dir, rndc_key)
    t = target(bind_dir, rndc_key)
    before = dict(vars(t))
    plan = t.plan(model(move_telecom))
    assert vars(t) == before
    payload = plan.payload
    assert isinstance(payload.previous, MappingProxyType)
    assert isinstance(payload.bundle.zone_files, MappingProxyType)
    assert dict(payload.previous) == {**files_of(bind_dir)}         # every file, as read
    with pytest.raises(TypeError):
        payload.previous["named.conf"] = ""                          # type: ignore[index]


def test_desired_is_pure_given_the_snapshot(bind_dir, rndc_key):
    install(model(), bind_dir, rndc_key)
    t = target(bind_dir, rndc_key)
    snapshot = t.read(None)
    os.unlink(os.path.join(bind_dir, "named.conf"))                 # no I/O after the read
    assert t.desired(model(), snapshot) == t.desired(model(), snapshot)
    assert diff(snapshot.state, t.desired(model(), snapshot)) == []


def test_a_stale_plan_is_refused_by_a_fresh_instance_and_changes_nothing(bind_dir, rndc_key):
    install(model(), bind_dir, rndc_key)
    plan = target(bind_dir, rndc_key).plan(model(move_telecom))
    assert not plan.empty

    def unicom_vip(data):
        data["services"][1]["vips"]["unicom"] = "198.51.100.70"
    install(model(unicom_vip), bind_dir, rndc_key)          # someone else, outside the lock
    tampered = files_of(bind_dir)
    fresh = target(bind_dir, rndc_key)
    with pytest.raises(StalePlan, match="changed since the plan"):
        apply_plan(fresh, plan)
    assert files_of(bind_dir) == tampered and fresh.commands == []


def test_the_change_guard_refuses_a_big_delete_without_force(bind_dir, rndc_key):
    install(model(add_mobile, files=MOBILE_FILES), bind_dir, rndc_key)
    before = files_of(bind_dir)

    def telecom_only(data):
        del data["carriers"][1]                                 # unicom
        for s in data["services"]:
            s["vips"].pop("unicom", None)
    with pytest.raises(lists.CarrierListError, match="unicom"):   # the carrier-list guard
        target(bind_dir, rndc_key).plan(model(telecom_only))
    plan = target(bind_dir, rndc_key, force=True).plan(model(telecom_only))
    assert plan.objects == 12 and plan.counts()["delete"] > 0.3 * 12
    fresh = target(bind_dir, rndc_key)
    with pytest.raises(TooMuchChange, match="delete"):
        apply_plan(fresh, plan)
    assert files_of(bind_dir) == before and fresh.commands == []


def test_one_named_conf_step_issues_the_reconfig_and_the_others_check_it(bind_dir, rndc_key):
    install(model(), bind_dir, rndc_key)
    plan = target(bind_dir, rndc_key).plan(model(add_mobile, files=MOBILE_FILES))
    first = conf_step(plan)
    assert first is not None and first.kind == "acl" and first.key == ("mobile",)
    carried = next(c for c in plan.changes if c.kind == "view" and c.key == ("mobile",))
    assert carried.action is Action.CREATE and carried != first
    before = files_of(bind_dir)
    t = target(bind_dir, rndc_key)
    # without the named.conf step, the change it carries is refused, not skipped
    with pytest.raises(bind.BindError, match="does not carry"):
        t.apply_change(carried, plan)
    assert files_of(bind_dir) == before and t.commands == []


def test_options_come_from_the_contract_not_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DCNET_DNS_DIR", str(tmp_path / "from-env"))
    monkeypatch.setenv("DCNET_DNS_CONTROL", "127.0.0.2:954")
    assert DNSTarget().directory == "/etc/bind/dcnet"               # the class reads no env
    resolved = resolve_options(DNSTarget, {})
    assert resolved["directory"] == str(tmp_path / "from-env")
    t = registry.create("dns", directory=str(tmp_path / "given"))
    assert t.directory == str(tmp_path / "given")
    assert (t.rndc.server, t.rndc.port) == ("127.0.0.2", 954)
    assert t.lock_path() == str(tmp_path / "given" / ".dcnet-dns.lock")
    assert {o.name for o in DNSTarget.options} >= {"directory", "force", "key_file", "netns"}
    assert next(o for o in DNSTarget.options if o.name == "force").flag == ""
    with pytest.raises(TargetError, match="ADDRESS:PORT"):
        DNSTarget(control="nowhere")


# -- elbctl wiring


def test_elbctl_has_render_dns_and_dns_options_on_plan_and_apply():
    runner = CliRunner()
    assert "named.conf" in runner.invoke(cli, ["render", "dns", "--help"]).output
    for command in ("plan", "apply"):
        out = runner.invoke(cli, [command, "--help"]).output
        assert "--force" in out and "--dns-dir" in out


EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "elb.yaml")


def test_elbctl_plan_target_dns_is_one_locked_session_with_the_dns_flags(bind_dir, rndc_key):
    runner = CliRunner()
    args = ["plan", "--target", "dns", "-f", EXAMPLE, "--dns-dir", bind_dir,
            "--detailed-exitcode"]
    done = runner.invoke(cli, [*args, "--dns-rndc-key", rndc_key])
    assert done.exit_code == 2, done.output                      # everything to create
    assert "+ view telecom" in done.output and "note: apply runs: rndc reconfig" in done.output
    assert os.path.exists(os.path.join(bind_dir, ".dcnet-dns.lock"))
    missing = runner.invoke(cli, [*args, "--dns-rndc-key", bind_dir + "/none.key"])
    assert missing.exit_code == 1 and "rndc key file" in missing.output
    assert "Traceback" not in missing.output
    other = runner.invoke(cli, ["plan", "--target", "lvs", "-f", EXAMPLE, "--dns-dir", bind_dir])
    assert other.exit_code == 2 and "not of --target lvs" in other.output
