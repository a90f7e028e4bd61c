"""Rendering (pure): keepalived.conf from templates (groups, MASTER/BACKUP, virtual
servers, operator overrides) and the real-server script; the elbctl commands refuse
invalid models before touching the kernel."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from dcnet.cli.elbctl import cli
from dcnet.lab import lvs_lab as lvslab
from dcnet.lvs.keepalived import KeepalivedError, context, render
from dcnet.lvs.realserver import RealServerError, render_all
from dcnet.model import parse_model

pytestmark = pytest.mark.unit


def with_directors():
    text = lvslab.model_text().replace(
        "lvs: {drain_seconds: 30}",
        "lvs:\n  drain_seconds: 30\n  directors: [{name: lvs-a, priority: 150}, {name: lvs-b}]\n"
        "  director_groups: [{name: lines, carriers: [telecom, unicom], virtual_router_id: 51,"
        " interface: eth1}]")
    return parse_model(text, read_text=lvslab.CIDR_FILES.__getitem__)


def test_one_vrrp_instance_per_carrier_by_default():
    ctx = context(lvslab.model())
    assert [(g["name"], g["interface"], g["vrid"], g["state"]) for g in ctx["groups"]] == [
        ("telecom", "ctc0", 50, "MASTER"), ("unicom", "cuc0", 51, "MASTER")]
    telecom = ctx["groups"][0]
    assert [v["address"] + " " + v["dev"] for v in telecom["vips"]] == [
        "198.51.100.10 ctc0", "198.51.100.11 ctc0"]
    assert telecom["rules"][0] == {"src": "198.51.100.10", "bits": 32, "table": 101,
                                   "priority": 20000}
    assert telecom["routes"] == [{"dst": "default", "gateway": "198.51.100.1", "dev": "ctc0",
                                  "table": 101, "protocol": 180}]


def test_directors_get_their_priority_and_state():
    model = with_directors()
    a, b = context(model, "lvs-a")["groups"], context(model, "lvs-b")["groups"]
    assert [(g["name"], g["state"], g["priority"], g["vrid"]) for g in a] == [
        ("lines", "MASTER", 150, 51)]
    assert [(g["state"], g["priority"]) for g in b] == [("BACKUP", 100)]
    with pytest.raises(KeepalivedError, match="choose one with --director"):
        context(model)
    with pytest.raises(KeepalivedError, match="unknown director"):
        context(model, "lvs-z")


def test_a_master_reannounces_its_vips_periodically():
    # a director that stays master through a healed split brain has no state change and
    # sends no gratuitous ARP on its own: the refresh bounds the router's black hole
    # (tests/netns/test_chaos_experiments.py: vrrp-director-partitioned)
    for director in ("lvs-a", "lvs-b"):
        text = render(with_directors(), director=director)
        global_defs = text[text.index("global_defs {"):text.index("}")]
        assert "\n    vrrp_garp_master_refresh 5\n" in global_defs
        assert "\n    vrrp_garp_master_refresh_repeat 1\n" in global_defs


def test_rendered_text_has_the_blocks():
    text = render(lvslab.model(check="http"))
    assert text.count("vrrp_instance ") == 2 and text.count("virtual_server ") == 4
    assert "virtual_server 198.51.100.10 80 {\n    delay_loop 5\n    lb_algo wrr\n" \
           "    lb_kind NAT\n    protocol TCP" in text
    assert "real_server 10.20.0.11 8080 {\n        weight 3\n        inhibit_on_failure\n" \
           "        HTTP_GET {" in text
    assert "real_server 10.20.0.12 8081 {" in text and "lb_kind DR" in text
    assert "from 198.51.100.74/32 table 102 priority 20000" in text
    assert "default via 198.51.100.65 dev cuc0 table 102 protocol 180 no_track" in text


def test_operator_templates_override_by_name(tmp_path):
    (tmp_path / "virtual_server.j2").write_text("# vs {{ vs.vip }}:{{ vs.port }}\n")
    text = render(lvslab.model(), templates=str(tmp_path))
    assert "# vs 198.51.100.10:80" in text and "virtual_server " not in text
    assert "vrrp_instance telecom" in text                    # the others stay built in
    (tmp_path / "vrrp_instance.j2").write_text("{{ group.no_such_field }}")
    with pytest.raises(KeepalivedError, match="template error"):
        render(lvslab.model(), templates=str(tmp_path))


def test_realserver_script_for_dr_servers_only():
    model = lvslab.model()
    text = render_all(model, servers=("10.20.0.12",), vias=("telecom=10.20.0.1",))
    assert text.count("# real server") == 1
    assert "ip addr replace 198.51.100.11/32 dev lo" in text
    assert "ip addr replace 198.51.100.10/32" not in text          # NAT VIP: nothing needed
    assert "ip route replace default via 10.20.0.1 table 101 proto 180" in text
    assert "ip route replace default via 198.51.100.65 table 102 proto 180" in text
    assert "ip rule add from 198.51.100.75 lookup 102 priority 20000" in text
    assert "net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2" in text
    with pytest.raises(RealServerError, match="CARRIER=ADDRESS"):
        render_all(model, vias=("mobile=1.2.3.4",))
    with pytest.raises(RealServerError, match="not a DR/TUN real server"):
        render_all(model, servers=("10.9.9.9",))


def test_invalid_model_is_rejected_before_any_kernel_access(tmp_path, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text(lvslab.model_text().replace("scheduler: wrr", "scheduler: fastest"))
    (tmp_path / "telecom.txt").write_text("192.0.2.0/26\n")
    (tmp_path / "unicom.txt").write_text("192.0.2.64/26\n")
    from dcnet.lvs.backend import LVSTarget

    def no_kernel(*a, **k):
        raise AssertionError("the kernel was opened for an invalid model")

    monkeypatch.setattr(LVSTarget, "__init__", no_kernel)
    for command in ("plan", "apply"):
        result = CliRunner().invoke(cli, [command, "-f", str(bad), "--lvs-state-dir",
                                          str(tmp_path / "state")])
        assert result.exit_code == 1, result.output
        assert "unknown scheduler 'fastest'" in result.output
    assert not (tmp_path / "state").exists()
