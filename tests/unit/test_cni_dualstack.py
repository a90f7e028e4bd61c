"""Unit tests of dual-stack host-gw: IPv6 helpers, the cluster CIDR config per family,
requested addresses per family, IPAM per family and the ADD result (issue #21)."""

from __future__ import annotations

import pytest

from dcnet.cni import ip4, ip6
from dcnet.cni.config import load_conf, requested_ips, runtime_requests
from dcnet.cni.errors import CniError

BASE = {"cniVersion": "1.1.0", "name": "podnet", "type": "dcnet"}


def conf_of(**fields):
    return load_conf(dict(BASE, **fields))


def bad(field_name: str, **fields) -> str:
    with pytest.raises(CniError) as caught:
        conf_of(**fields)
    assert caught.value.code == 7
    assert f": {field_name}: " in caught.value.msg
    return caught.value.msg


# ---------------------------------------------------------------- ip6


def test_ip6_round_trips_and_subnet_arithmetic():
    net, plen = ip6.parse_cidr("fd00:10:0:1::/64", strict=True)
    assert ip6.fmt_cidr(net + 1, plen) == "fd00:10:0:1::1/64"
    assert ip6.fmt_ip(ip6.broadcast(net, plen)) == "fd00:10:0:1:ffff:ffff:ffff:ffff"
    assert ip6.contains(net, plen, ip6.parse_ip("fd00:10:0:1::abcd"))
    assert not ip6.contains(net, plen, ip6.parse_ip("fd00:10:0:2::1"))
    assert len(ip6.ip_bytes(net)) == 16
    assert ip6.family_of("10.0.0.0/8") is ip4 and ip6.family_of("::/0") is ip6


@pytest.mark.parametrize("text", ["10.0.0.1", "fd00::1%eth0", "fd00:::1", "", "fd00::g"])
def test_ip6_rejects_what_is_not_an_ipv6_address(text):
    with pytest.raises(ValueError, match="invalid IPv6 address"):
        ip6.parse_ip(text)


def test_ip6_strict_cidr_names_the_network():
    with pytest.raises(ValueError, match=r"host bits set.*fd00:10::/48"):
        ip6.parse_cidr("fd00:10::1/48", strict=True)
    with pytest.raises(ValueError, match="prefix length"):
        ip6.parse_cidr("fd00:10::/129")


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("value", [["10.244.0.0/16", "fd00:10::/48"],
                                   "10.244.0.0/16,fd00:10::/48",
                                   "fd00:10::/48, 10.244.0.0/16"])
def test_cluster_cidr_takes_one_range_per_family(value):
    conf = conf_of(clusterCIDR=value)
    assert ip4.fmt_cidr(*conf.cluster_cidr) == "10.244.0.0/16"
    assert ip6.fmt_cidr(*conf.cluster_cidr6) == "fd00:10::/48"
    assert (conf.subnet_len, conf.subnet_len6) == (24, 64)


def test_ipv6_only_cluster_is_accepted_with_its_own_subnet_length():
    conf = conf_of(clusterCIDR="fd00:10::/48", subnetLenV6=80)
    assert conf.cluster_cidr is None and conf.cluster_cidr6 == (
        ip6.parse_ip("fd00:10::"), 48)
    assert conf.subnet_len6 == 80


def test_ipv6_cluster_error_never_says_invalid_prefix_length():
    conf = conf_of(clusterCIDR="fd00:10::/48")  # the example: accepted now
    assert conf.cluster_cidr6 is not None
    message = bad("clusterCIDR", clusterCIDR="fd00:10::1/48")
    assert "host bits set" in message and "fd00:10::/48" in message


@pytest.mark.parametrize("fields,field_name,words", [
    ({"clusterCIDR": ["10.244.0.0/16", "10.245.0.0/16"]}, "clusterCIDR[1]", "second IPv4"),
    ({"clusterCIDR": ["fd00:10::/48", "fd00:11::/48"]}, "clusterCIDR[1]", "second IPv6"),
    ({"clusterCIDR": []}, "clusterCIDR", "at least one"),
    ({"clusterCIDR": 7}, "clusterCIDR", "expected a CIDR"),
    ({"clusterCIDR": ["10.244.0.0/16", "nonsense"]}, "clusterCIDR[1]", "invalid IPv4"),
    ({"clusterCIDR": "fd00:10::/48", "subnetLenV6": 40}, "subnetLenV6", "shorter"),
    ({"clusterCIDR": "fd00:10::/48", "subnetLenV6": 127}, "subnetLenV6", "out of range"),
    ({"clusterCIDR": "fd00:10::/48", "subnetLen": 64}, "subnetLen", "subnetLenV6"),
])
def test_bad_cluster_fields_are_named(fields, field_name, words):
    assert words in bad(field_name, **fields)


def test_requested_ips_one_per_family():
    conf = conf_of(clusterCIDR=["10.244.0.0/16", "fd00:10::/48"],
                   runtimeConfig={"ips": ["10.244.1.9/24", "fd00:10:0:1::9/64"]})
    requested, mac = requested_ips(conf, {})
    assert requested == {4: ip4.parse_ip("10.244.1.9"), 6: ip6.parse_ip("fd00:10:0:1::9")}
    assert mac is None
    plain = conf_of(clusterCIDR="10.244.0.0/16")
    assert requested_ips(plain, {"IP": "10.244.1.7,fd00::7"})[0] == {
        4: ip4.parse_ip("10.244.1.7"), 6: ip6.parse_ip("fd00::7")}
    two = conf_of(runtimeConfig={"ips": ["fd00::1", "fd00::2"]})
    with pytest.raises(CniError, match="one IPv6 address per interface"):
        requested_ips(two, {})
    with pytest.raises(CniError, match=r"IPv6 is not supported here"):
        runtime_requests(conf, {})  # the IPv4-only callers say so plainly


# ---------------------------------------------------------------- IPAM per family


def test_ipam_families_share_the_directory_without_seeing_each_other(tmp_path):
    from dcnet.cni.ipam import Reservations, pool

    net4, plen4 = ip4.parse_cidr("10.244.1.0/24")
    net6, plen6 = ip6.parse_cidr("fd00:10:0:1::/64")
    v4, v6 = Reservations(str(tmp_path), ip4), Reservations(str(tmp_path), ip6)
    with v4:
        a4 = v4.reserve("c1", "eth0", net4, plen4)
    with v6:
        a6 = v6.reserve("c1", "eth0", net6, plen6)
        b6 = v6.reserve("c2", "eth0", net6, plen6)
    assert ip4.fmt_ip(a4) == "10.244.1.2"
    assert [ip6.fmt_ip(a) for a in (a6, b6)] == ["fd00:10:0:1::2", "fd00:10:0:1::3"]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["10.244.1.2", "fd00:10:0:1::2", "fd00:10:0:1::3", "last_reserved_ip.0",
                     "last_reserved_ip.1", "lock"]
    assert (tmp_path / "fd00:10:0:1::2").read_bytes() == b"c1\r\neth0"  # host-local's format
    assert v4.all() == {a4: ("c1", "eth0")} and set(v6.all()) == {a6, b6}
    assert v4.addresses() == {a4} and v6.addresses() == {a6, b6}
    with v6:
        assert v6.release("c1", "eth0") == [a6]
        assert v6.gc({("c1", "eth0")}) == [(b6, "c2", "eth0")]
    assert v4.all() == {a4: ("c1", "eth0")} and v6.all() == {}
    with v6:  # round-robin goes on after the last reserved, per family
        assert ip6.fmt_ip(v6.reserve("c3", "eth0", net6, plen6)) == "fd00:10:0:1::4"
    gateway, first, last = pool(net6, plen6, ip6)
    assert (ip6.fmt_ip(gateway), ip6.fmt_ip(first), ip6.fmt_ip(last)) == (
        "fd00:10:0:1::1", "fd00:10:0:1::2", "fd00:10:0:1:ffff:ffff:ffff:fffe")


def test_ipam_requested_ipv6_outside_the_pool_is_refused(tmp_path):
    from dcnet.cni.ipam import Reservations

    net6, plen6 = ip6.parse_cidr("fd00:10:0:1::/64")
    with Reservations(str(tmp_path), ip6) as v6, pytest.raises(CniError) as caught:
        v6.reserve("c1", "eth0", net6, plen6, ip6.parse_ip("fd00:10:0:2::5"))
    assert caught.value.code == 101 and "fd00:10:0:1::2-fd00:10:0:1:" in caught.value.msg


# ---------------------------------------------------------------- node file and result


NODE = {"network": "podnet", "node": "n1", "nodeIP": "192.168.100.1",
        "subnet": "10.244.1.0/24", "gateway": "10.244.1.1", "nodeIP6": "fd00:100::1",
        "subnet6": "fd00:10:0:1::/64", "gateway6": "fd00:10:0:1::1", "agentPid": 1}


def test_node_file_lists_a_pool_per_family():
    from dcnet.cni.nodestate import NodeState

    dual = NodeState(NODE)
    assert [(p.version, p.fam.fmt_cidr(p.net, p.plen)) for p in dual.pools] == [
        (4, "10.244.1.0/24"), (6, "fd00:10:0:1::/64")]
    assert dual.subnet == ip4.parse_ip("10.244.1.0")
    only6 = NodeState(dict(NODE, subnet=None, gateway=None, nodeIP=None))
    assert [p.version for p in only6.pools] == [6] and only6.subnet is None
    with pytest.raises(KeyError):
        NodeState(dict(NODE, subnet=None, subnet6=None))


def test_result_lists_both_addresses_gateways_and_default_routes():
    from dcnet.cni.hostgw import HostGw
    from dcnet.cni.nodestate import NodeState
    from dcnet.cni.version import convert

    node = NodeState(NODE)

    class Args:
        ifname, netns = "eth0", "/run/netns/p1"
    result = HostGw._result(Args, conf_of(clusterCIDR=["10.244.0.0/16", "fd00:10::/48"]),
                            node, [ip4.parse_ip("10.244.1.5"), ip6.parse_ip("fd00:10:0:1::5")],
                            "dcn0", "0a:59:0a:f4:01:05", "0a:58:0a:f4:01:05", None)
    assert result["ips"] == [
        {"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 1},
        {"address": "fd00:10:0:1::5/64", "gateway": "fd00:10:0:1::1", "interface": 1}]
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"},
                                {"dst": "::/0", "gw": "fd00:10:0:1::1"}]
    legacy = convert(result, "0.4.0")
    assert [ip["version"] for ip in legacy["ips"]] == ["4", "6"]


# ---------------------------------------------------------------- leases and routes


def test_leases_per_family_and_routes_via_each_familys_node_address():
    from dcnet.cni.routes import desired_routes
    from dcnet.cni.store import MemoryStore
    from dcnet.cni.subnets import acquire

    store = MemoryStore()
    mine4 = acquire(store, "10.244.0.0/16", 24, "n1", "192.168.100.1")
    mine6 = acquire(store, "fd00:10::/48", 64, "n1", "fd00:100::1")
    other4 = acquire(store, "10.244.0.0/16", 24, "n2", "192.168.100.2")
    other6 = acquire(store, "fd00:10::/48", 64, "n2", "fd00:100::2")
    assert (mine4.subnet, mine6.subnet) == ("10.244.0.0/24", "fd00:10::/64")
    assert (other4.subnet, other6.subnet) == ("10.244.1.0/24", "fd00:10:0:1::/64")
    assert acquire(store, "fd00:10::/48", 64, "n1", "fd00:100::9").subnet == mine6.subnet
    assert acquire(store, "10.244.0.0/16", 24, "n1", "192.168.100.1") == mine4  # kept
    assert desired_routes(store.leases(), "n1") == {"10.244.1.0/24": "192.168.100.2",
                                                    "fd00:10:0:1::/64": "fd00:100::2"}


@pytest.mark.parametrize("text", ["fd00:10::/48", "fd00::1/64", "fd00::1"])
def test_ipv4_only_parsers_say_ipv6_is_not_supported_here(text):
    with pytest.raises(ValueError) as caught:
        ip4.parse_cidr(text) if "/" in text else ip4.parse_ip(text)
    assert "IPv6 is not supported here" in str(caught.value)
    assert "invalid prefix length" not in str(caught.value)


# ---------------------------------------------------------------- the agent's kernel watch


def _nlmsg(kind: int, body: bytes) -> bytes:
    import struct

    message = struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body
    return message + b"\0" * (-len(message) % 4)


def test_kernel_events_of_pod_veths_link_local_ipv6_do_not_wake_the_agent():
    import struct

    from dcnet.cni.agent import kernel_event_matters

    def addr(family: int, scope: int) -> bytes:
        return _nlmsg(20, struct.pack("=BBBBI", family, 64, 0, scope, 7))

    def route(family: int, table: int, proto: int, kind: int = 24) -> bytes:
        return _nlmsg(kind, struct.pack("=BBBBBBBBI", family, 64, 0, 0, table, proto, 0, 1, 0))
    link_local = addr(10, 253) + route(10, 254, 2) + route(10, 255, 2)
    assert not kernel_event_matters(link_local)
    assert kernel_event_matters(link_local + addr(10, 0))        # a global IPv6 address
    assert kernel_event_matters(route(10, 254, 217, kind=25))    # our IPv6 route deleted
    assert kernel_event_matters(addr(2, 253))                    # IPv4: as before, always
    assert kernel_event_matters(route(2, 254, 2))
    assert not kernel_event_matters(b"")
