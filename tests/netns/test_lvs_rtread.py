"""dcnet.lvs.rtread (the drift check's routing read without pyroute2) reads the state
:meth:`dcnet.lvs.routing.Routing.read` reads, in a namespace this test makes: VIP
addresses (IPv4 and IPv6; a link-scope one left out), elbctl's simple rules of both
families, rules in its range that are not (fwmark, a prefix, an input interface: the
"other" keys, numbered alike), rules outside the range, routes of elbctl's protocol in
any table and of another protocol, the link down, sysctls."""

from __future__ import annotations

import os
import subprocess

import pytest

from dcnet.lvs import rtread
from dcnet.lvs.routing import Routing
from dcnet.model.lvs_section import LVSSettings
from dcnet.sysio import netns

pytestmark = pytest.mark.netns

SYSCTLS = ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.ipv4.conf.all.rp_filter"]


@pytest.fixture
def ns():
    name = f"rtread-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_rtread_reads_what_routing_reads(ns):
    settings = LVSSettings()

    def ip(*argv):
        subprocess.run(["ip", "-n", ns, *argv], check=True)

    def both():
        routing = Routing(settings=settings, netns=ns)
        try:
            whole = routing.read([104], (), SYSCTLS).state
            lean = rtread.read(netns.path_of(ns), settings, SYSCTLS, routing.sysctl_get)
        finally:
            routing.close()
        assert lean == whole
        return lean

    assert {kind for kind, _key in both()} == {"sysctl"}      # no elb0, rule or route
    # no dummy devices on this kernel: a veth stands in for elb0
    ip("link", "add", "elb0", "type", "veth", "peer", "name", "elbp")
    ip("link", "add", "bgp0", "type", "veth", "peer", "name", "bgpp")
    for dev in ("lo", "elb0", "bgp0", "bgpp"):
        ip("link", "set", dev, "up")
    ip("addr", "add", "203.0.113.2/24", "dev", "bgp0")
    ip("addr", "add", "2001:db8::2/64", "dev", "bgp0", "nodad")
    for i in range(5):
        ip("addr", "add", f"10.128.0.{i}/32", "dev", "elb0")
        ip("rule", "add", "from", f"10.128.0.{i}", "lookup", "104", "priority", "20000")
    ip("addr", "add", "2001:db8:1::5/128", "dev", "elb0", "nodad")
    ip("addr", "add", "10.9.9.9/24", "dev", "elb0", "scope", "link")
    ip("-6", "rule", "add", "from", "2001:db8:1::5", "lookup", "104", "priority", "20000")
    ip("rule", "add", "fwmark", "7", "lookup", "104", "priority", "20001")
    ip("rule", "add", "from", "10.1.0.0/16", "lookup", "104", "priority", "20002")
    ip("rule", "add", "iif", "bgp0", "lookup", "104", "priority", "20002")
    ip("rule", "add", "iif", "bgp0", "lookup", "105", "priority", "20002")
    ip("rule", "add", "from", "10.128.0.1", "lookup", "105", "priority", "100")
    for argv in (["default", "via", "203.0.113.1", "dev", "bgp0", "table", "104"],
                 ["10.7.0.0/16", "dev", "bgp0", "table", "105"]):
        ip("route", "add", *argv, "proto", "180")
    ip("-6", "route", "add", "default", "via", "2001:db8::1", "dev", "bgp0", "table", "104",
       "proto", "180")
    ip("route", "add", "default", "via", "203.0.113.1", "dev", "bgp0", "table", "104",
       "metric", "5")
    got = both()
    assert got[("link", ("elb0",))] == {"state": "up"}
    assert {key for kind, key in got if kind == "vip"} == {
        *((f"10.128.0.{i}",) for i in range(5)), ("2001:db8:1::5",)}
    assert {key for kind, key in got if kind == "rule"} == {
        *((f"10.128.0.{i}",) for i in range(5)), ("2001:db8:1::5",),
        ("other", 20001, "fwmark 7"), ("other", 20002, "src 10.1.0.0"),
        ("other", 20002, "iifname bgp0"), ("other", 20002, "iifname bgp0", "#8")}
    assert {key for kind, key in got if kind == "route"} == {
        (104, "0.0.0.0/0"), (104, "::/0"), (105, "10.7.0.0/16")}
    ip("link", "set", "elb0", "down")
    assert both()[("link", ("elb0",))] == {"state": "down"}
