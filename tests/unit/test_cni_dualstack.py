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
