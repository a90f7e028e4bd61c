"""pyroute2's DHCP client, glued to dcnet's lease journal (``dcnet.cni.leases``).

``JournalLease`` is the lease type the client uses: it is never dumped by pyroute2 (the
runner's hooks journal a lease once the pod is configured), it loads the journaled lease
to resume, and it computes T1/T2 with ``leases.lease_timers``. ``LeaseClient`` adds
``resume`` (straight to BOUND with a journaled, still valid lease), ``client_config``
builds a client's configuration from a journal record, and ``release_thread`` sends a
DHCPRELEASE for a lease by opening a client on it and leaving at once.

Packets from the network are hostile input: ``LeaseClient`` drops a packet that pyroute2
cannot decode or handle (a client identifier of 0 bytes raises IndexError in its
decoder, a message type of 99 or none at all raises in its dispatch), where pyroute2
would let the exception end the client's receive loop and the lease would silently
stop being renewed (tests/netns/test_hostile_dhcp.py). A rogue server's OFFER or ACK
with lease time 0, and its ACK or NAK to a REQUEST meant for another server, are ignored.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from pyroute2.dhcp import fsm
from pyroute2.dhcp.client import AsyncDHCPClient, ClientConfig
from pyroute2.dhcp.dhcp4socket import AsyncDHCP4Socket
from pyroute2.dhcp.leases import Lease

from dcnet.cni import leases

LOG = logging.getLogger(__name__)


class JournalLease(Lease):
    """pyroute2 lease kept in dcnet's journal (by the runner's hooks), with RFC 2131 timers
    from ``leases.lease_timers``; ``load`` hands the client the lease to resume, if any."""

    resume_from: Lease | None = None

    def dump(self) -> None:
        """Journaling happens in the runner's hooks, after the pod is configured."""

    @classmethod
    def load(cls, interface: str) -> Lease | None:
        return cls.resume_from

    def _timers(self) -> tuple[float | None, float | None]:
        options = self.ack["options"]
        return leases.lease_timers(options.get("lease_time"), options.get("renewal_time"),
                                   options.get("rebinding_time"))

    @property
    def renewal_in(self) -> float | None:
        t1 = self._timers()[0]
        return None if t1 is None else self.obtained + t1 - time.time()

    @property
    def rebinding_in(self) -> float | None:
        t2 = self._timers()[1]
        return None if t2 is None else self.obtained + t2 - time.time()


def lease_from_record(record: dict) -> JournalLease:
    lease = record["lease"]
    return JournalLease(ack=lease["ack"], interface=record["ifname"],
                        server_mac=lease["server_mac"], obtained=float(lease["obtained"]))


class DropBadPackets(AsyncDHCP4Socket):
    """pyroute2's DHCP socket; a packet its decoder fails on in any way is dropped (it
    drops only ValueError)."""

    @classmethod
    def _decode_msg(cls, data: bytes):
        try:
            return super()._decode_msg(data)
        except ValueError:
            raise
        except Exception as exc:  # any packet from the network
            raise ValueError(f"undecodable DHCP packet ({type(exc).__name__}: {exc})") \
                from None


class LeaseClient(AsyncDHCPClient):
    """pyroute2's client plus ``resume``: carry on with a journaled, still valid lease;
    packets it cannot decode or handle are dropped, not fatal."""

    def __init__(self, config: ClientConfig) -> None:
        super().__init__(config)
        self._sock = DropBadPackets(config.interface)   # opened in __aenter__

    async def _process_msg(self, msg) -> None:
        try:
            await super()._process_msg(msg)
        except Exception as exc:  # a reply from the network
            LOG.warning("%s: dropped a DHCP reply that cannot be handled: %s: %s",
                        self.config.interface, type(exc).__name__, exc)

    # A reply with the right xid may still come from a rogue server on the segment: an
    # OFFER or ACK granting no time (lease time 0) is ignored, and so is an ACK or NAK
    # answering a REQUEST addressed to another server (REQUESTING: the offer selected;
    # RENEWING: the lease's server, RFC 2131 4.4.5). REBOOTING and REBINDING accept any
    # server, as the RFC says.

    _selected: str | None = None

    def _grants_no_time(self, msg) -> bool:
        lease_time = msg.dhcp["options"].get("lease_time")
        return lease_time is not None and lease_time <= 0

    def _from_another_server(self, msg) -> bool:
        state = msg.xid.request_state
        if state is fsm.State.REQUESTING:
            expected = self._selected
        elif state is fsm.State.RENEWING and self.lease is not None:
            expected = self.lease.server_id
        else:
            return False
        got = msg.dhcp["options"].get("server_id")
        return expected is not None and got is not None and str(got) != str(expected)

    def _ignore(self, msg, why: str) -> None:
        LOG.warning("%s: ignored a DHCP %s from %s: %s", self.config.interface,
                    msg.dhcp["options"].get("message_type"), msg.eth_src, why)

    async def offer_received(self, msg) -> None:
        if self._grants_no_time(msg):
            return self._ignore(msg, "lease time 0")
        if self.state is fsm.State.SELECTING:
            self._selected = msg.dhcp["options"].get("server_id")
        await super().offer_received(msg)

    async def ack_received(self, msg) -> None:
        if self._grants_no_time(msg):
            return self._ignore(msg, "lease time 0")
        if self._from_another_server(msg):
            return self._ignore(msg, "not from the server the request was for")
        await super().ack_received(msg)

    async def nak_received(self, msg) -> None:
        if self._from_another_server(msg):
            return self._ignore(msg, "not from the server the request was for")
        await super().nak_received(msg)

    async def resume(self) -> None:
        """From INIT_REBOOT (the lease type loaded the journaled lease) straight to BOUND,
        timers armed from the lease; a T1/T2 already past renews/rebinds now. Unlike a
        REBOOTING request, a server that is down now does not make the client forget a
        lease that is still valid."""
        lease = self.lease
        assert lease is not None and self.state is fsm.State.INIT_REBOOT
        self.state = fsm.State.REBOOTING
        self.state = fsm.State.BOUND
        self.lease = lease  # arms T1/T2/expiry (the setter)
        if lease.expired:
            await self._expire_lease()
        elif lease.rebinding_in is not None and lease.rebinding_in <= 0:
            await self._rebind()
        elif lease.renewal_in is not None and lease.renewal_in <= 0:
            await self._renew()


def client_config(record: dict, lease_type: type, hooks=(), release: bool = True,
                  interface: str | None = None) -> ClientConfig:
    cid = bytes.fromhex(record["clientID"]) if record.get("clientID") else None
    return ClientConfig(interface=interface or record["ifname"], lease_type=lease_type,
                        hooks=hooks, handle_signals=False, release=release, client_id=cid,
                        host_name=record.get("hostname"), vendor_id="dcnet", hook_timeout=5.0)



def release_thread(config: ClientConfig, done: threading.Event,
                   errors: list[BaseException]) -> None:
    """Open a client on the lease and leave at once: pyroute2 sends the DHCPRELEASE."""
    async def release() -> None:
        async with LeaseClient(config):
            pass
    try:
        asyncio.run(release())
    except BaseException as exc:
        errors.append(exc)
    finally:
        done.set()
