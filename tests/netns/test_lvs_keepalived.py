"""keepalived on our rendered configuration, on this kernel (VRRP only: no IPVS here).

- every rendered file passes ``keepalived -t`` (and a broken override is refused);
- VRRP failover of a carrier VIP between two director namespaces: the backup takes the
  VIP, its carrier rule and table route, and the carrier's router reaches the VIP again.
  The time it took is printed and recorded as a property, never asserted;
- the same for a dual-stack line's IPv6 VIP (its own vrrp_instance, VRRP version 3): the
  master holds it with its ``ip -6 rule`` and the table's IPv6 default route, and
  failover moves all of them to the backup, which the carrier's router then reaches.
"""

from __future__ import annotations

import os
import time

import pytest

from dcnet.lab import lvs_lab as lvslab
from dcnet.lvs.keepalived import KeepalivedError, check_config, interfaces, render
from dcnet.model import load_model, parse_model
from dcnet.sysio import proc

pytestmark = pytest.mark.netns

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "elb.yaml")
VIP = "198.51.100.10"
FAILOVER_MODEL = f"""version: 1
carriers:
  - {{name: telecom, uplink: ctc0, gateway: 198.51.100.1, table: 101,
     vip_ranges: [198.51.100.0/26], default: true}}
lvs:
  directors: [{{name: lvs-a, priority: 150}}, {{name: lvs-b, priority: 100}}]
services:
  - job: {lvslab.JOB_NAT}
    vips: {{telecom: {VIP}}}
    ports: [{{port: 80, scheduler: wrr, forward: nat, target_port: 8080}}]
    health_check: {{type: tcp}}
    real_servers: [{{address: 10.20.0.11}}]
"""


VIP6 = "2001:db8:1::10"
FAILOVER_MODEL6 = (FAILOVER_MODEL
                   .replace("gateway: 198.51.100.1,", "gateway: 198.51.100.1, gateway6: "
                            "'2001:db8:1::1',")
                   .replace("vip_ranges: [198.51.100.0/26]",
                            "vip_ranges: [198.51.100.0/26, '2001:db8:1::/64']")
                   .replace(f"vips: {{telecom: {VIP}}}", f"vips: {{telecom: [{VIP}, '{VIP6}']}}")
                   .replace("real_servers: [{address: 10.20.0.11}]",
                            "real_servers: [{address: 10.20.0.11}, {address: 'fd00:20::11'}]"))


def models():
    yield "example", load_model(EXAMPLE), None
    for check in ("none", "tcp", "http"):
        yield f"lab-{check}", lvslab.model(check=check), None
    yield "lab-dual-stack", lvslab.model(check="tcp", ipv6=True), None
    yield "failover6-b", parse_model(FAILOVER_MODEL6), "lvs-b"
    failover = parse_model(FAILOVER_MODEL)
    yield "failover-a", failover, "lvs-a"
    yield "failover-b", failover, "lvs-b"


@pytest.mark.parametrize("name, model, director", list(models()), ids=lambda v: v
                         if isinstance(v, str) else "")
def test_every_rendered_file_passes_keepalived_t(name, model, director):
    check_config(render(model, director=director), interfaces(model))


def test_keepalived_t_refuses_a_broken_override(tmp_path):
    (tmp_path / "virtual_server.j2").write_text("virtual_server {{ vs.vip }} {{ vs.port }} {\n"
                                                "    lb_kind SIDEWAYS\n}\n")
    model = lvslab.model()
    with pytest.raises(KeepalivedError, match="keepalived -t refused"):
        check_config(render(model, templates=str(tmp_path)), interfaces(model))


def failover_topology() -> dict:
    links = [{"a": {"host": d, "ifname": "ctc0",
                    "addresses": [f"198.51.100.{i}/26", f"2001:db8:1::{i}/64"]},
              "b": {"host": "isp", "ifname": f"to-{d}", "bridge": "br0"}}
             for i, d in ((2, "lvs-a"), (3, "lvs-b"))]
    return {"hosts": ["lvs-a", "lvs-b", "isp"],
            "bridges": [{"name": "br0", "host": "isp",
                         "addresses": ["198.51.100.1/26", "2001:db8:1::1/64"]}],
            "links": links}


def has_vip(lab, host: str) -> bool:
    return f"{VIP}/32" in lab.run(host, ["ip", "-4", "addr", "show", "dev", "ctc0"]).stdout


def wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_vrrp_failover_moves_the_carrier_vip(lab_factory, tmp_path, record_property):
    lab = lab_factory(failover_topology())
    model = parse_model(FAILOVER_MODEL)
    daemons = {}
    for director in ("lvs-a", "lvs-b"):
        conf = tmp_path / f"{director}.conf"
        conf.write_text(render(model, director=director))
        run = tmp_path / director
        run.mkdir()
        daemons[director] = lab.start(director, [
            "keepalived", "-P", "-n", "-l", "-D", "-f", str(conf), "-p", f"{run}/k.pid",
            "-r", f"{run}/v.pid"], name=f"keepalived-{director}",
            log_path=str(tmp_path / f"{director}.log"))
    ping = lambda: lab.run("isp", ["ping", "-n", "-q", "-c", "1", "-W", "1", VIP],  # noqa: E731
                           check=False).returncode == 0
    assert wait_for(lambda: has_vip(lab, "lvs-a"), 30), (tmp_path / "lvs-a.log").read_text()
    assert not has_vip(lab, "lvs-b")
    assert ping()
    started = time.monotonic()
    proc.stop(daemons["lvs-a"])                         # SIGTERM: the master resigns
    moved = wait_for(lambda: has_vip(lab, "lvs-b"), 30)
    vip_moved = time.monotonic() - started
    reachable = wait_for(ping, 30)
    answered = time.monotonic() - started
    record_property("vrrp_failover_vip_seconds", round(vip_moved, 3))
    record_property("vrrp_failover_reachable_seconds", round(answered, 3))
    print(f"\nVRRP failover: VIP on the backup after {vip_moved:.2f}s, "
          f"reachable from the carrier router after {answered:.2f}s")
    assert moved and reachable, (tmp_path / "lvs-b.log").read_text()
    assert not has_vip(lab, "lvs-a")
    rules = lab.run("lvs-b", ["ip", "rule", "show"]).stdout
    assert f"20000:\tfrom {VIP} lookup 101" in rules
    routes = lab.run("lvs-b", ["ip", "route", "show", "table", "101"]).stdout
    assert "default via 198.51.100.1 dev ctc0 proto 180" in routes


def has_vip6(lab, host: str) -> bool:
    return f"{VIP6}/128" in lab.run(host, ["ip", "-6", "addr", "show", "dev", "ctc0"]).stdout


def test_vrrp_failover_moves_the_carrier_ipv6_vip(lab_factory, tmp_path, record_property):
    lab = lab_factory(failover_topology())
    model = parse_model(FAILOVER_MODEL6)
    daemons = {}
    for director in ("lvs-a", "lvs-b"):
        conf = tmp_path / f"{director}.conf"
        conf.write_text(render(model, director=director))
        run = tmp_path / director
        run.mkdir()
        daemons[director] = lab.start(director, [
            "keepalived", "-P", "-n", "-l", "-D", "-f", str(conf), "-p", f"{run}/k.pid",
            "-r", f"{run}/v.pid"], name=f"keepalived-{director}",
            log_path=str(tmp_path / f"{director}.log"))
    assert "vrrp_instance telecom-v6" in (tmp_path / "lvs-a.conf").read_text()
    ping = lambda: lab.run("isp", ["ping", "-6", "-n", "-q", "-c", "1", "-W", "1", VIP6],  # noqa: E731
                           check=False).returncode == 0
    assert wait_for(lambda: has_vip6(lab, "lvs-a") and has_vip(lab, "lvs-a"), 30), \
        (tmp_path / "lvs-a.log").read_text()
    assert not has_vip6(lab, "lvs-b")
    assert wait_for(ping, 30), (tmp_path / "lvs-a.log").read_text()
    rules = lab.run("lvs-a", ["ip", "-6", "rule", "show"]).stdout
    assert f"20000:\tfrom {VIP6} lookup 101" in rules, rules
    started = time.monotonic()
    proc.stop(daemons["lvs-a"])                         # SIGTERM: the master resigns
    moved = wait_for(lambda: has_vip6(lab, "lvs-b"), 30)
    vip_moved = time.monotonic() - started
    reachable = wait_for(ping, 30)
    answered = time.monotonic() - started
    record_property("vrrp6_failover_vip_seconds", round(vip_moved, 3))
    record_property("vrrp6_failover_reachable_seconds", round(answered, 3))
    print(f"\nVRRP (IPv6) failover: VIP on the backup after {vip_moved:.2f}s, "
          f"reachable from the carrier router after {answered:.2f}s")
    assert moved and reachable, (tmp_path / "lvs-b.log").read_text()
    assert not has_vip6(lab, "lvs-a")
    rules = lab.run("lvs-b", ["ip", "-6", "rule", "show"]).stdout
    assert f"20000:\tfrom {VIP6} lookup 101" in rules, rules
    routes = lab.run("lvs-b", ["ip", "-6", "route", "show", "table", "101"]).stdout
    assert "default via 2001:db8:1::1 dev ctc0 proto 180" in routes, routes
    neighbours = lab.run("isp", ["ip", "-6", "neigh", "show", VIP6]).stdout
    mac_b = lab.run("lvs-b", ["cat", "/sys/class/net/ctc0/address"]).stdout.strip()
    assert mac_b in neighbours, (neighbours, mac_b)    # the router now sends to lvs-b
