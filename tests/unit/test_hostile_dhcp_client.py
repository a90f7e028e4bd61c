"""The macvlan agent's DHCP client against a rogue server's well-formed replies with the
right xid (issue #15): pure state-machine checks on ``LeaseClient`` (no socket opened;
packets built with scapy and decoded by pyroute2's own decoder).

A rogue's NAK or ACK answering a REQUEST that was addressed to the real server is
ignored (RENEWING: the lease's server; REQUESTING: the selected offer's), and so is an
OFFER or ACK granting lease time 0; the real server's replies are still taken. The
namespace test (tests/netns/test_hostile_dhcp.py) cannot show this reliably: there the
real server's answer usually arrives first.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from pyroute2.dhcp import fsm
from pyroute2.dhcp.dhcp4socket import AsyncDHCP4Socket
from pyroute2.dhcp.xids import Xid
from scapy.all import BOOTP, DHCP, IP, UDP, Ether

from dcnet.cni.dhcpclient import JournalLease, LeaseClient, client_config

pytestmark = pytest.mark.unit

MAC = "02:11:22:33:44:55"
SERVER, ROGUE = "192.168.77.250", "192.168.77.249"


def reply(kind: str, xid: int, server: str, lease_time: int | None = 120):
    options = [("message-type", kind), ("server_id", server)]
    if lease_time is not None:
        options.append(("lease_time", lease_time))
    options += [("subnet_mask", "255.255.255.0"), ("router", "192.168.77.254"), "end"]
    chaddr = bytes.fromhex(MAC.replace(":", "")) + b"\0" * 10
    frame = (Ether(src="02:00:00:00:00:fa", dst="ff:ff:ff:ff:ff:ff") /
             IP(src=server, dst="255.255.255.255") / UDP(sport=67, dport=68) /
             BOOTP(op=2, xid=int(xid), chaddr=chaddr, yiaddr="192.168.77.100",
                   siaddr=server) / DHCP(options=options))
    return AsyncDHCP4Socket._decode_msg(bytes(frame))


def client_in(state: fsm.State) -> LeaseClient:
    client = LeaseClient(client_config({"ifname": "eth0"}, JournalLease))
    client._xid = Xid()
    client._state = state
    if state is fsm.State.RENEWING:
        ack = reply("ack", 0, SERVER)
        client._lease = JournalLease(ack=ack.dhcp, interface="eth0", server_mac=ack.eth_src,
                                     obtained=time.time())
    return client


def run(coroutine_factory):
    async def main():
        return await coroutine_factory()
    return asyncio.run(main())


def test_renewing_ignores_the_rogues_nak_and_ack_and_takes_the_servers():
    async def scenario():
        client = client_in(fsm.State.RENEWING)
        xid = client.xid.for_state(fsm.State.RENEWING)
        await client.nak_received(reply("nak", xid, ROGUE, None))
        await client.ack_received(reply("ack", xid, ROGUE, 0xFFFFFFFF))
        ignored = (client.state, client.lease.server_id, client.lease.ack["options"]
                   ["lease_time"])
        await client.ack_received(reply("ack", xid, SERVER, 300))
        return ignored, client.state, client.lease.ack["options"]["lease_time"]
    ignored, state, lease_time = run(scenario)
    assert ignored == (fsm.State.RENEWING, SERVER, 120)
    assert (state, lease_time) == (fsm.State.BOUND, 300)


def test_renewing_takes_the_servers_nak():
    async def scenario():
        client = client_in(fsm.State.RENEWING)
        await client.nak_received(reply("nak", client.xid.for_state(fsm.State.RENEWING),
                                        SERVER, None))
        return client.state
    assert run(scenario) is not fsm.State.RENEWING


def test_selecting_ignores_an_offer_of_no_time_then_requesting_ignores_the_rogue():
    async def scenario():
        client = client_in(fsm.State.SELECTING)
        xid = client.xid.for_state(fsm.State.SELECTING)
        await client.offer_received(reply("offer", xid, ROGUE, 0))
        after_zero = client.state
        await client.offer_received(reply("offer", xid, SERVER, 120))
        requesting = client.state
        xid = client.xid.for_state(fsm.State.REQUESTING)
        await client.nak_received(reply("nak", xid, ROGUE, None))
        await client.ack_received(reply("ack", xid, ROGUE, 0xFFFFFFFF))
        still = client.state
        await client.ack_received(reply("ack", xid, SERVER, 0))
        zero = client.state
        await client.ack_received(reply("ack", xid, SERVER, 120))
        return after_zero, requesting, still, zero, client.state, client.lease.server_id
    assert run(scenario) == (fsm.State.SELECTING, fsm.State.REQUESTING, fsm.State.REQUESTING,
                             fsm.State.REQUESTING, fsm.State.BOUND, SERVER)
