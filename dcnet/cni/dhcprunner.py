"""The per-pod DHCP runner of the macvlan agent: one attachment's client in its own thread.

A ``Runner`` is a thread that lives in the pod's network namespace and runs
``dcnet.cni.dhcpclient.LeaseClient`` on the pod's interface. The client's hooks put the
leased address, the default route and (through the agent) the host-shim route in place,
journal the lease and set ``bound`` so ADD can answer. The client renews at T1, rebinds at
T2; on expiry the link is set down; a changed address (a NAK then a new lease, or an ACK
for another address) moves the pod to it, new address first. ``stop(release=True)`` makes
pyroute2 send DHCPRELEASE from the leased address over the pod's own link.

Kernel I/O uses ``dcnet.cni.rtnl`` (plain sockets, usable inside the running event loop,
where pyroute2's synchronous IPRoute cannot run).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import TYPE_CHECKING

from pyroute2.dhcp.hooks import Trigger, hook
from pyroute2.dhcp.leases import Lease

from dcnet.cni import ip4, leases
from dcnet.cni.dhcpclient import JournalLease, LeaseClient, client_config
from dcnet.cni.nsref import resolve
from dcnet.cni.rtnl import Netlink
from dcnet.metrics import cni as cni_metrics
from dcnet.sysio import netns

if TYPE_CHECKING:
    from dcnet.cni.dhcpagent import MacvlanAgent

NAK_GRACE = 10.0
STOP_TIMEOUT = 10.0


class Runner:
    """The DHCP client of one attachment, in a thread inside the pod's namespace."""

    def __init__(self, agent: MacvlanAgent, record: dict, resume: Lease | None = None):
        self.agent, self.record, self.resume = agent, record, resume
        self.key = leases.attachment_key(record["containerID"], record["ifname"])
        self.bound = threading.Event()
        self.ready = threading.Event()
        self.finished = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.release_on_stop = False
        self.stopping = False
        self.error: BaseException | None = None
        self.nak_timer: asyncio.TimerHandle | None = None
        self.nl: Netlink | None = None
        self.thread: threading.Thread | None = None

    def log(self, text: str) -> None:
        self.agent.log(f"{self.key}: {text}")

    def start(self) -> None:
        self.thread = netns.start_thread_in(resolve(self.record["netns"]), self._main,
                                            name=f"dhcp-{self.key}"[:15])

    def alive(self) -> bool:
        return self.thread is not None and not self.finished.is_set()

    def stop(self, release: bool) -> None:
        """Stop the client; with ``release`` it first sends DHCPRELEASE (leased address)."""
        if self.thread is None or self.finished.is_set():
            return
        self.ready.wait(STOP_TIMEOUT)
        self.stopping = True

        def trigger() -> None:
            self.release_on_stop = release
            assert self.stop_event is not None
            self.stop_event.set()
        if self.loop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self.loop.call_soon_threadsafe(trigger)
        self.finished.wait(STOP_TIMEOUT)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:
            self.error = exc
            self.log(f"DHCP client failed: {type(exc).__name__}: {exc}")
        finally:
            self.ready.set()
            self.finished.set()

    async def _run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        self.nl = Netlink()  # this thread lives in the pod's namespace
        try:
            lease_type = type("PodLease", (JournalLease,), {"resume_from": self.resume})
            client = LeaseClient(client_config(self.record, lease_type, self._hooks()))
            async with client:
                self.ready.set()
                if self.resume is not None:
                    await client.resume()
                else:
                    await client.bootstrap()
                await self.stop_event.wait()
                client.config.release = self.release_on_stop
                if self.release_on_stop and client.lease is not None:
                    self.log(f"releasing {client.lease.ip} to {self._server(client.lease)}")
        finally:
            self.nl.close()

    @staticmethod
    def _server(lease: Lease) -> str:
        with contextlib.suppress(Exception):
            return str(lease.server_id)
        return "?"

    def _hooks(self) -> list:
        @hook(Trigger.BOUND)
        async def bound(lease: Lease) -> None:
            self.on_lease(lease, "bound")

        @hook(Trigger.RENEWED)
        async def renewed(lease: Lease) -> None:
            self.on_lease(lease, "renewed")

        @hook(Trigger.REBOUND)
        async def rebound(lease: Lease) -> None:
            self.on_lease(lease, "rebound")

        @hook(Trigger.EXPIRED)
        async def expired(lease: Lease) -> None:
            self.on_expired(lease)

        @hook(Trigger.UNBOUND)
        async def unbound(lease: Lease) -> None:
            self.on_unbound(lease)
        return [bound, renewed, rebound, expired, unbound]

    # ------------------------------------------------------------ hooks (pod netns thread)

    def _link_index(self) -> int | None:
        assert self.nl is not None
        link = self.nl.link(self.record["ifname"])
        return None if link is None else link["index"]

    def _apply(self, index: int, steps: list[tuple[str, str]]) -> None:
        assert self.nl is not None
        for step, value in steps:
            if step == "add-address":
                address, plen = ip4.parse_cidr(value)
                self.nl.replace_address(index, ip4.ip_bytes(address), plen,
                                        ip4.ip_bytes(ip4.broadcast(address, plen)))
            elif step == "del-address":
                address, plen = ip4.parse_cidr(value)
                self.nl.delete_address(index, ip4.ip_bytes(address), plen)
            elif step == "set-gateway":
                self.nl.replace_route(b"\0\0\0\0", 0, ip4.ip_bytes(ip4.parse_ip(value)), index)
            elif step == "del-gateway":
                self.nl.delete_route(b"\0\0\0\0", 0, index)

    def on_lease(self, lease: Lease, how: str) -> None:
        cni_metrics.dhcp(how)
        ack = leases.sanitize_ack(lease.ack)
        view = leases.lease_view(ack)
        index = self._link_index()
        if index is None:
            self.log(f"{how} {view['address']} but {self.record['ifname']} is gone")
            return
        self._cancel_nak_timer()
        assert self.nl is not None
        self.nl.set_up(index)
        old = self.record.get("configured")
        # A new address in the old one's subnet is a secondary: with promote_secondaries
        # (set at ADD) deleting the old primary promotes it instead of taking it along.
        self._apply(index, leases.plan_pod_config(old, view))
        wanted, _plen = ip4.parse_cidr(view["address"])
        if not any(a["index"] == index and a["address"] == ip4.ip_bytes(wanted)
                   for a in self.nl.addresses()):
            self._apply(index, leases.plan_pod_config(None, view))
        self.record.update(state=leases.BOUND, configured={
            "address": view["address"], "gateway": view["gateway"]}, dns=view["dns"],
            lease={"ack": ack, "server_mac": lease.server_mac, "obtained": lease.obtained})
        self.agent.journal.write(self.record)
        old_address = (old or {}).get("address")
        if old_address != view["address"]:
            self.agent.shim_route(old_address, view["address"])
            if old_address:
                self.log(f"address changed from {old_address} to {view['address']} ({how})")
        times = leases.record_lease_times(self.record) or {}
        expiry = times.get("expiry")
        self.log(f"{how} {view['address']} from {self._server(lease)}"
                 + (f", expires in {expiry - time.time():.0f}s" if expiry else ""))
        self.bound.set()

    def on_expired(self, lease: Lease) -> None:
        cni_metrics.dhcp("expired")
        index = self._link_index()
        old = self.record.get("configured") or {}
        if index is not None:
            assert self.nl is not None
            self.nl.set_down(index)
            if old.get("address"):
                self._apply(index, [("del-address", old["address"])])
        self.agent.shim_route(old.get("address"), None)
        self.record.update(state=leases.EXPIRED, configured=None)
        self.agent.journal.write(self.record)
        self.log(f"lease of {lease.ip} expired without a renewal: "
                 f"{self.record['ifname']} set down")

    def on_unbound(self, lease: Lease) -> None:
        if self.stopping:
            return  # DEL: the release follows, then the link goes
        cni_metrics.dhcp("nak")
        remaining = lease.expiration_in
        grace = NAK_GRACE if remaining is None else max(0.0, min(NAK_GRACE, remaining))
        self.log(f"server refused {lease.ip} (NAK): asking for a new lease, keeping the "
                 f"address at most {grace:.0f}s meanwhile")
        assert self.loop is not None
        self._cancel_nak_timer()
        self.nak_timer = self.loop.call_later(grace, self._drop_after_nak)

    def _cancel_nak_timer(self) -> None:
        if self.nak_timer is not None:
            self.nak_timer.cancel()
            self.nak_timer = None

    def _drop_after_nak(self) -> None:
        self.nak_timer = None
        old = self.record.get("configured") or {}
        index = self._link_index()
        if index is not None and old.get("address"):
            self._apply(index, [("del-address", old["address"])])
        self.agent.shim_route(old.get("address"), None)
        self.record.update(configured=None)
        self.agent.journal.write(self.record)
        self.log(f"no new lease after the NAK: {old.get('address')} removed")
