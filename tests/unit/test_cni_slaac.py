"""Unit tests of macvlan mode's IPv6 (SLAAC) pure parts: the ``ipv6`` setting and its
errors, IPv6 address text, the pod's sysctls, the per-pod stable secret, which addresses
count as usable, reading address and route dumps, and the CNI result's IPv6 entries."""

from __future__ import annotations

import _socket
from struct import Struct

import pytest

from dcnet.cni import slaac
from dcnet.cni.errors import CniError
from dcnet.cni.macvlan6 import Ipv6Pod
from dcnet.cni.rtnl import RTA_DST, RTA_GATEWAY, RTA_OIF, RTM_NEWADDR, RTM_NEWROUTE, attr

pytestmark = pytest.mark.unit


def packed(text: str) -> bytes:
    return _socket.inet_pton(10, text)


# ---------------------------------------------------------------- the ipv6 setting


def test_ipv6_is_off_by_default_and_takes_a_string_or_an_object():
    assert not slaac.ipv6_settings({}).enabled
    assert slaac.ipv6_settings({"ipv6": "off"}).mode == "off"
    assert slaac.ipv6_settings({"ipv6": {"mode": "dhcpv6"}}).mode == "dhcpv6"
    plain = slaac.ipv6_settings({"ipv6": "slaac"})
    assert (plain.mode, plain.timeout, plain.addr_gen_mode) == ("slaac", 20, "eui64")
    full = slaac.ipv6_settings({"ipv6": {"mode": "slaac", "timeout": 5,
                                         "addrGenMode": "stable-privacy"},
                                "hostShim": {"address6": "fd77:77::1"}})
    assert (full.timeout, full.addr_gen_mode, full.shim_address) == (
        5, "stable-privacy", "fd77:77::1")


@pytest.mark.parametrize(("raw", "field", "words"), [
    ({"ipv6": "on"}, "ipv6", "'on' is not one of"),
    ({"ipv6": {"mode": "on"}}, "ipv6.mode", "'on' is not one of"),
    ({"ipv6": True}, "ipv6", "expected"),
    ({"ipv6": {"mode": "slaac", "timeout": 0}}, "ipv6.timeout", "1..3600"),
    ({"ipv6": {"mode": "slaac", "timeout": True}}, "ipv6.timeout", "integer"),
    ({"ipv6": {"mode": "slaac", "addrGenMode": "random"}}, "ipv6.addrGenMode", "'random'"),
    ({"ipv6": {"mode": "slaac", "prefix": 1}}, "ipv6.prefix", "unknown field"),
    ({"ipv6": "slaac", "hostShim": {"address6": "10.0.0.1"}}, "hostShim.address6",
     "not an IPv6 address"),
    ({"ipv6": "slaac", "hostShim": {"address6": "fd00::1/129"}}, "hostShim.address6",
     "prefix length"),
    ({"hostShim": {"address6": "fd00::1"}}, "hostShim.address6", "IPv6 is off"),
])
def test_bad_ipv6_settings_name_their_field(raw, field, words):
    with pytest.raises(CniError) as caught:
        slaac.ipv6_settings(raw)
    assert caught.value.code == 7
    assert caught.value.msg.startswith(f"invalid network config: {field}: ")
    assert words in caught.value.msg


def test_ipv6_address_text():
    assert slaac.parse_cidr6("fd77::1/64") == (packed("fd77::1"), 64)
    assert slaac.parse_cidr6("fd77::1") == (packed("fd77::1"), 128)
    assert slaac.fmt6(packed("fd77:0::0:1")) == "fd77::1"
    for bad in ("fd77::1/x", "fd77::1/200", "nope", 7):
        with pytest.raises(ValueError):
            slaac.parse_cidr6(bad)


# ---------------------------------------------------------------- the pod's sysctls


def test_pod_sysctls_enable_slaac_with_the_generation_mode_last():
    eui = slaac.pod_sysctls("eth0", slaac.Ipv6Settings("slaac"), "net/ns/pod/eth0")
    assert dict(eui) == {"/proc/sys/net/ipv6/conf/eth0/disable_ipv6": "0",
                         "/proc/sys/net/ipv6/conf/eth0/accept_ra": "2",
                         "/proc/sys/net/ipv6/conf/eth0/autoconf": "1",
                         "/proc/sys/net/ipv6/conf/eth0/accept_dad": "1",
                         "/proc/sys/net/ipv6/conf/eth0/addr_gen_mode": "0"}
    dhcp = dict(slaac.pod_sysctls("eth0", slaac.Ipv6Settings("dhcpv6"), "x"))
    assert dhcp["/proc/sys/net/ipv6/conf/eth0/autoconf"] == "0"  # the address from DHCPv6
    assert dhcp["/proc/sys/net/ipv6/conf/eth0/accept_ra"] == "2"  # the router from the RA
    stable = slaac.pod_sysctls("eth0", slaac.Ipv6Settings("slaac", addr_gen_mode=
                                                          "stable-privacy"), "a/b/c/eth0")
    keys = [path.rsplit("/", 1)[1] for path, _ in stable]
    assert keys[-2:] == ["stable_secret", "addr_gen_mode"] and stable[-1][1] == "2"
    assert stable[-2][1] == slaac.stable_secret("a/b/c/eth0")


def test_stable_secret_is_an_address_fixed_per_identity():
    one = slaac.stable_secret("net/default/web/eth0")
    assert one == slaac.stable_secret("net/default/web/eth0")
    assert one != slaac.stable_secret("net/default/web/eth1")
    assert len(slaac.parse_cidr6(one)[0]) == 16


def test_usable_global_skips_link_local_tentative_failed_temporary_deprecated():
    def addr(text, scope=0, flags=0):
        return {"index": 2, "address": packed(text), "plen": 64, "scope": scope,
                "flags": flags}
    good = addr("fd77::5")
    found = slaac.usable_global([
        addr("fe80::1", scope=253), addr("fd77::1", flags=slaac.IFA_F_TENTATIVE),
        addr("fd77::2", flags=slaac.IFA_F_DADFAILED), addr("fd77::3",
                                                           flags=slaac.IFA_F_TEMPORARY),
        addr("fd77::4", flags=slaac.IFA_F_DEPRECATED), good])
    assert found == [good]


# ---------------------------------------------------------------- dumps


class DumpStub:
    """Answers address and route dumps with the replies given (what the kernel sends)."""

    def __init__(self, replies):
        self.replies = replies

    def request(self, msg_type, flags, payload):
        return self.replies


def addr_reply(text: str, index: int, scope: int = 0, flags: int = 0, plen: int = 64):
    body = Struct("=BBBBI").pack(10, plen, flags & 0xFF, scope, index)
    return RTM_NEWADDR, body + attr(slaac.IFA_ADDRESS, packed(text)) + attr(
        slaac.IFA_FLAGS, Struct("=I").pack(flags))


def route_reply(dst: str | None, plen: int, gateway: str | None, oif: int, table=254):
    body = Struct("=BBBBBBBBI").pack(10, plen, 0, 0, table, 9, 0, 1, 0)
    if dst:
        body += attr(RTA_DST, packed(dst))
    if gateway:
        body += attr(RTA_GATEWAY, packed(gateway))
    return RTM_NEWROUTE, body + attr(RTA_OIF, Struct("=I").pack(oif))


def test_slaac_state_waits_for_a_usable_address_and_a_router():
    tentative = [addr_reply("fd77::5", 3, flags=slaac.IFA_F_TENTATIVE),
                 route_reply(None, 0, "fe80::1", 3)]
    assert slaac.slaac_state(DumpStub(tentative), 3) is None
    no_router = [addr_reply("fd77::5", 3), route_reply("fd77::", 64, None, 3)]
    assert slaac.slaac_state(DumpStub(no_router), 3) is None
    other_link = [addr_reply("fd77::5", 4), route_reply(None, 0, "fe80::1", 4)]
    assert slaac.slaac_state(DumpStub(other_link), 3) is None
    ready = [addr_reply("fe80::9", 3, scope=253), addr_reply("fd77::5", 3),
             route_reply(None, 0, "fe80::1", 3, table=255), route_reply(None, 0, "fe80::2", 3)]
    assert slaac.slaac_state(DumpStub(ready), 3) == {"address": "fd77::5/64",
                                                      "gateway": "fe80::2"}


def test_wait_slaac_names_the_timeout_and_why():
    stub = DumpStub([addr_reply("fd77::5", 3, flags=slaac.IFA_F_DADFAILED)])
    with pytest.raises(CniError) as caught:
        slaac.wait_slaac(stub, 3, "eth0", 0.01, step=0.005)
    assert caught.value.code == 11
    assert "within ipv6.timeout (0.01s)" in caught.value.msg
    assert "tentative or failed DAD" in caught.value.msg


# ---------------------------------------------------------------- the CNI result


def test_result_lists_the_slaac_address_with_the_routers_link_local_gateway():
    result = {"interfaces": [{"name": "eth0"}], "ips": [
        {"address": "192.168.77.120/24", "interface": 0, "gateway": "192.168.77.254"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "192.168.77.254"}]}
    record = {"configured6": {"address": "fd77::5/64", "gateway": "fe80::1"}}
    Ipv6Pod.result6(result, record, 0)
    assert result["ips"][1] == {"address": "fd77::5/64", "interface": 0,
                                "gateway": "fe80::1"}
    assert result["routes"][1] == {"dst": "::/0", "gw": "fe80::1"}
    untouched = {"ips": [], "routes": []}
    Ipv6Pod.result6(untouched, {"configured6": None}, 0)
    assert untouched == {"ips": [], "routes": []}


def test_dhcpv6_dns_joins_the_results_dns():
    result = {"dns": {"nameservers": ["192.168.77.250"], "domain": "pods.lab"}}
    record = {"lease6": {"dns": ["fd77:77::250"], "domains": ["pods6.lab"]}}
    Ipv6Pod.dns6(result, record)
    assert result["dns"] == {"nameservers": ["192.168.77.250", "fd77:77::250"],
                             "domain": "pods.lab", "search": ["pods6.lab"]}
    untouched = {"dns": {}}
    Ipv6Pod.dns6(untouched, {"lease6": None})
    assert untouched == {"dns": {}}
