"""The per-pod DHCPv6 client of the macvlan agent (``ipv6: dhcpv6``): one thread each.

A ``Dhcp6Runner`` is a thread that lives in the pod's network namespace with a UDP
socket on port 546 bound to the pod's interface. It acquires one address (SOLICIT,
ADVERTISE, REQUEST, REPLY; ``dcnet.cni.dhcpv6`` builds and parses the messages), puts it
on the interface as a /128 (the on-link /64 and the default route come from the router
advertisement, as RFC 8415 intends), journals the lease (``lease6``) and the address
(``configured6``) in the attachment's record, moves the host shim's route, renews at T1
(RENEW to the server), rebinds at T2 (REBIND to all servers), and on expiry removes the
address and solicits again. ``stop(release=True)`` sends RELEASE (retransmitted, bounded)
before the thread ends; a runner started with ``resume`` (the journaled lease, after an
agent restart) keeps the address and renews at the journaled T1.

Retransmission is simplified from RFC 8415 section 15: 1 s, doubling up to 8 s, bounded
by the phase's end (T2 for RENEW, the valid lifetime for REBIND). No DAD is waited for
on the leased address (IFA_F_NODAD): a duplicate is a server's misconfiguration here.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING

from dcnet.cni import dhcpv6, leases, slaac
from dcnet.cni.nsref import resolve
from dcnet.cni.rtnl import Netlink
from dcnet.sysio import netns

if TYPE_CHECKING:
    from dcnet.cni.dhcpagent import MacvlanAgent

CLIENT_PORT, SERVER_PORT = 546, 547
ALL_SERVERS = "ff02::1:2"
STOP_TIMEOUT = 10.0
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


class Dhcp6Runner:
    """The DHCPv6 client of one attachment, in a thread inside the pod's namespace."""

    def __init__(self, agent: MacvlanAgent, record: dict, client_duid: bytes,
                 resume: dict | None = None, device: str | None = None):
        self.agent, self.record, self.duid = agent, record, client_duid
        self.ifname = record["ifname"]
        self.device = device or self.ifname  # the link the socket is bound to
        self.ia = dhcpv6.iaid(self.ifname)
        self.key = leases.attachment_key(record["containerID"], record["ifname"])
        self.lease = resume
        self.bound = threading.Event()
        self.finished = threading.Event()
        self.stopping = threading.Event()
        self.release_on_stop = False
        self.released = False
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self.sock: socket.socket | None = None
        self.nl: Netlink | None = None

    def log(self, text: str) -> None:
        self.agent.log(f"{self.key}: DHCPv6: {text}")

    def start(self) -> None:
        self.thread = netns.start_thread_in(resolve(self.record["netns"]), self._main,
                                            name=f"dhcp6-{self.key}"[:15])

    def alive(self) -> bool:
        return self.thread is not None and not self.finished.is_set()

    def stop(self, release: bool) -> None:
        """Stop the client; with ``release`` it first sends RELEASE for its address."""
        if self.thread is None or self.finished.is_set():
            return
        self.release_on_stop = release
        self.stopping.set()
        self.finished.wait(STOP_TIMEOUT)

    # ------------------------------------------------------------ the thread

    def _open(self) -> None:
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.device.encode())
        self.sock.bind(("::", CLIENT_PORT))

    def release_here(self) -> bool:
        """Send RELEASE for the resumed lease over ``device`` from the calling thread's
        namespace (the agent's, over a temporary link carrying the pod's MAC)."""
        try:
            self._open()
            self._release()
        finally:
            if self.sock is not None:
                self.sock.close()
        return self.released

    def _main(self) -> None:
        try:
            self.nl = Netlink()
            self._open()
            self._run()
        except BaseException as exc:
            self.error = exc
            self.log(f"client failed: {type(exc).__name__}: {exc}")
        finally:
            if self.sock is not None:
                self.sock.close()
            if self.nl is not None:
                self.nl.close()
            self.finished.set()

    def _run(self) -> None:
        if self.lease is not None:
            self.bound.set()
            self.log(f"resumed {self.lease['address']}")
        while not self.stopping.is_set():
            if self.lease is None:
                lease = self._acquire()
                if lease is None:
                    break
                self._apply(lease, "bound")
                continue
            t1, t2, valid = self._times(self.lease)
            if t1 is None:  # infinite: nothing to renew
                self.stopping.wait()
                break
            if self._sleep_until(t1):
                break
            reply = self._exchange(dhcpv6.RENEW, t2, server=self._server(self.lease),
                                   address=self.lease["address"])
            if reply is None and not self.stopping.is_set():
                reply = self._exchange(dhcpv6.REBIND, valid, address=self.lease["address"])
            if self.stopping.is_set():
                break
            if reply is not None and reply["address"]:
                self._apply(reply, "renewed")
            elif time.time() >= valid:
                self._expire()
            elif reply is not None:  # NoBinding or the address withdrawn: start over
                self.log(f"server answered {reply['status']} ({reply['message']}): "
                         "soliciting again")
                self._expire()
        if self.release_on_stop and self.lease is not None:
            self._release()

    @staticmethod
    def _times(lease: dict) -> tuple[float | None, float, float]:
        t1, t2, valid = dhcpv6.timers(lease["t1"], lease["t2"], lease["preferred"],
                                      lease["valid"])
        if t1 is None:
            return None, 0.0, 0.0
        obtained = float(lease["obtained"])
        return obtained + t1, obtained + t2, obtained + valid

    @staticmethod
    def _server(lease: dict) -> bytes:
        return bytes.fromhex(lease["server"])

    def _sleep_until(self, when: float) -> bool:
        """Wait until epoch ``when``; True when stopped meanwhile."""
        return self.stopping.wait(max(0.0, when - time.time()))

    def _acquire(self) -> dict | None:
        while not self.stopping.is_set():
            advert = self._exchange(dhcpv6.SOLICIT, time.time() + 60, want=dhcpv6.ADVERTISE)
            if advert is None or not advert["address"]:
                continue
            reply = self._exchange(dhcpv6.REQUEST, time.time() + 30, server=advert["server"],
                                   address=advert["address"])
            if reply is not None and reply["address"]:
                return reply
            self.stopping.wait(1.0)
        return None

    def _exchange(self, kind: int, until: float, server: bytes | None = None,
                  address: str | None = None, want: int = dhcpv6.REPLY) -> dict | None:
        """Send ``kind`` and retransmit until an answer or ``until`` (epoch) or stop."""
        assert self.sock is not None
        xid = dhcpv6.new_xid()
        packed = None if address is None else socket.inet_pton(socket.AF_INET6, address)
        started, wait = time.monotonic(), 1.0
        index = socket.if_nametoindex(self.device)
        while not self.stopping.is_set() or kind == dhcpv6.RELEASE:
            message = dhcpv6.build(kind, xid, self.duid, self.ia, time.monotonic() - started,
                                   server, packed)
            try:
                self.sock.sendto(message, (ALL_SERVERS, SERVER_PORT, 0, index))
            except OSError as exc:  # link-local address still tentative, link down
                self.log(f"cannot send yet: {exc}")
            end = min(time.monotonic() + wait, time.monotonic() + max(0.0, until - time.time()))
            while time.monotonic() < end:
                if self.stopping.is_set() and kind != dhcpv6.RELEASE:
                    return None
                self.sock.settimeout(max(0.01, min(0.2, end - time.monotonic())))
                try:
                    data = self.sock.recv(dhcpv6.MAX_MESSAGE)
                except TimeoutError:
                    continue
                except OSError as exc:  # e.g. the link went down under us
                    self.log(f"receive failed: {exc}")
                    self.stopping.wait(0.2)
                    continue
                try:
                    answer = dhcpv6.parse(data, xid, self.duid, self.ia)
                except ValueError as exc:
                    self.log(f"dropped a malformed answer: {exc}")
                    continue
                if answer is not None and answer["type"] == want:
                    answer["obtained"] = time.time()
                    return answer
            if time.time() >= until:
                return None
            wait = min(wait * 2, 8.0)
        return None

    # ------------------------------------------------------------ the pod's address

    def _apply(self, reply: dict, how: str) -> None:
        assert self.nl is not None
        old = self.lease["address"] if self.lease else None
        self.lease = {"server": reply["server"].hex(), "address": reply["address"],
                      "t1": reply["t1"], "t2": reply["t2"], "preferred": reply["preferred"],
                      "valid": reply["valid"], "obtained": reply["obtained"],
                      "dns": reply["dns"], "domains": reply["domains"]}
        link = self.nl.link(self.ifname)
        if link is None:
            self.log(f"{how} {reply['address']} but {self.ifname} is gone")
            return
        slaac.add_address6(self.nl, link["index"],
                           socket.inet_pton(socket.AF_INET6, reply["address"]), 128)
        if old and old != reply["address"]:
            self._remove(old, link["index"])
        configured = dict(self.record.get("configured6") or {})
        configured["address"] = f"{reply['address']}/128"
        self.record.update(lease6=self.lease, configured6=configured)
        self.agent.journal.write(self.record)
        if old != reply["address"] and configured.get("gateway"):
            # before ADD has the router, ADD adds the route itself
            self.agent.shim_route6(f"{old}/128" if old else None, configured["address"])
        self.log(f"{how} {reply['address']} (valid {reply['valid']}s)")
        self.bound.set()

    def _remove(self, address: str, index: int) -> None:
        assert self.nl is not None
        try:
            slaac.delete_address6(self.nl, index,
                                  socket.inet_pton(socket.AF_INET6, address), 128)
        except OSError as exc:
            self.log(f"removing {address} failed: {exc}")

    def _expire(self) -> None:
        assert self.nl is not None and self.lease is not None
        address = self.lease["address"]
        link = self.nl.link(self.ifname)
        if link is not None:
            self._remove(address, link["index"])
        self.agent.shim_route6(f"{address}/128", None)
        self.lease = None
        configured = dict(self.record.get("configured6") or {})
        configured["address"] = None
        self.record.update(lease6=None, configured6=configured)
        self.agent.journal.write(self.record)
        self.log(f"lease of {address} ended without a renewal: address removed, soliciting")

    def _release(self) -> None:
        assert self.lease is not None
        reply = self._exchange(dhcpv6.RELEASE, time.time() + 3, server=self._server(self.lease),
                               address=self.lease["address"])
        self.released = reply is not None
        self.log(f"released {self.lease['address']}" if self.released
                 else f"no answer to the release of {self.lease['address']}")
