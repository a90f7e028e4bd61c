"""Unit tests of ``dcnet.cni.dhcpv6``: DUIDs, client messages, parsing a server's
ADVERTISE/REPLY (ours or not, statuses, withdrawn addresses, DNS), hostile replies, and
the T1/T2 rules."""

from __future__ import annotations

import socket
import struct

import pytest

from dcnet.cni import dhcpv6
from dcnet.cni.dhcpv6 import option

pytestmark = pytest.mark.unit

CLIENT = dhcpv6.duid("pod", "0a:00:00:00:00:01", "default/web/eth0")
SERVER = struct.pack("!HH", 3, 1) + bytes(6)
IA = dhcpv6.iaid("eth0")
XID = b"\x01\x02\x03"


def packed(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def reply(kind=dhcpv6.REPLY, xid=XID, client=CLIENT, ia=IA, address="fd77:77::123",
          t1=60, t2=96, preferred=120, valid=120, extra=b"", ia_extra=b""):
    iaaddr = b""
    if address is not None:
        iaaddr = option(dhcpv6.OPT_IAADDR, packed(address) + struct.pack("!II", preferred,
                                                                         valid))
    body = option(dhcpv6.OPT_CLIENTID, client) + option(dhcpv6.OPT_SERVERID, SERVER)
    body += option(dhcpv6.OPT_IA_NA, struct.pack("!III", ia, t1, t2) + iaaddr + ia_extra)
    return bytes([kind]) + xid + body + extra


def test_duids_are_stable_per_pod_or_mac():
    assert dhcpv6.duid("pod", "0a:00:00:00:00:02", "default/web/eth0") == CLIENT
    assert dhcpv6.duid("pod", "0a:00:00:00:00:01", "default/api/eth0") != CLIENT
    assert CLIENT[:2] == b"\x00\x04" and len(CLIENT) == 18  # DUID-UUID
    assert dhcpv6.duid("mac", "0a:00:00:00:00:01", "x") == bytes.fromhex("000300010a0000000001")
    assert dhcpv6.iaid("eth0") == IA != dhcpv6.iaid("eth1")


def test_client_messages_carry_what_the_server_needs():
    solicit = dhcpv6.build(dhcpv6.SOLICIT, XID, CLIENT, IA)
    assert solicit[0] == dhcpv6.SOLICIT and solicit[1:4] == XID
    codes = [code for code, _ in dhcpv6.options(solicit[4:])]
    assert codes == [dhcpv6.OPT_CLIENTID, dhcpv6.OPT_ELAPSED_TIME, dhcpv6.OPT_IA_NA,
                     dhcpv6.OPT_ORO]
    release = dhcpv6.build(dhcpv6.RELEASE, XID, CLIENT, IA, 1.5, SERVER,
                           packed("fd77:77::123"))
    found = dict(dhcpv6.options(release[4:]))
    assert found[dhcpv6.OPT_SERVERID] == SERVER
    assert found[dhcpv6.OPT_ELAPSED_TIME] == struct.pack("!H", 150)
    assert dhcpv6.OPT_ORO not in found
    inner = dict(dhcpv6.options(found[dhcpv6.OPT_IA_NA][12:]))
    assert inner[dhcpv6.OPT_IAADDR][:16] == packed("fd77:77::123")


def test_parse_a_reply_for_us():
    dns = option(dhcpv6.OPT_DNS_SERVERS, packed("fd77:77::250"))
    domains = option(dhcpv6.OPT_DOMAIN_LIST, b"\x04pods\x03lab\x00")
    got = dhcpv6.parse(reply(extra=dns + domains), XID, CLIENT, IA)
    assert got["type"] == dhcpv6.REPLY and got["server"] == SERVER
    assert (got["address"], got["t1"], got["t2"], got["valid"]) == (
        "fd77:77::123", 60, 96, 120)
    assert got["dns"] == ["fd77:77::250"] and got["domains"] == ["pods.lab"]


def test_answers_for_others_are_ignored():
    assert dhcpv6.parse(reply(xid=b"\x09\x09\x09"), XID, CLIENT, IA) is None
    assert dhcpv6.parse(reply(client=b"\x00\x04" + bytes(16)), XID, CLIENT, IA) is None
    assert dhcpv6.parse(reply(kind=dhcpv6.SOLICIT), XID, CLIENT, IA) is None
    assert dhcpv6.parse(reply(ia=IA + 1), XID, CLIENT, IA)["address"] is None
    assert dhcpv6.parse(b"\x07", XID, CLIENT, IA) is None


def test_statuses_and_withdrawn_addresses():
    none = option(dhcpv6.OPT_STATUS_CODE, struct.pack("!H", dhcpv6.STATUS_NO_ADDRS) + b"no")
    got = dhcpv6.parse(reply(address=None, ia_extra=none), XID, CLIENT, IA)
    assert got["address"] is None and got["status"] == dhcpv6.STATUS_NO_ADDRS
    assert got["message"] == "no"
    assert dhcpv6.parse(reply(valid=0), XID, CLIENT, IA)["address"] is None


@pytest.mark.parametrize("data", [
    bytes([dhcpv6.REPLY]) + XID + b"\x00\x01\x00",  # truncated header
    bytes([dhcpv6.REPLY]) + XID + b"\x00\x01\x00\x40abc",  # length past the end
    bytes([dhcpv6.REPLY]) + XID + option(dhcpv6.OPT_CLIENTID, CLIENT)
    + option(dhcpv6.OPT_IA_NA, b"\x00\x01"),  # short IA_NA
    reply(extra=option(dhcpv6.OPT_DOMAIN_LIST, b"\x50abc")),  # label past the end
])
def test_hostile_replies_raise_value_error(data):
    with pytest.raises(ValueError):
        dhcpv6.parse(data, XID, CLIENT, IA)


@pytest.mark.parametrize(("t1", "t2", "preferred", "valid", "expected"), [
    (60, 96, 120, 120, (60.0, 96.0, 120.0)),
    (0, 0, 100, 120, (50.0, 80.0, 120.0)),  # the client chooses: 0.5 and 0.8 of preferred
    (90, 60, 120, 120, (30.0, 60.0, 120.0)),  # T1 past T2 replaced
    (60, 500, 120, 120, (60.0, 120.0, 120.0)),  # T2 past the valid lifetime
    (0, 0, dhcpv6.INFINITY, dhcpv6.INFINITY, (None, None, None)),
])
def test_timers(t1, t2, preferred, valid, expected):
    assert dhcpv6.timers(t1, t2, preferred, valid) == expected
