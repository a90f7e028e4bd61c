"""The host-gw node agent: the node's subnet lease, its bridge, and routes to other nodes.

One ``reconcile`` pass: take (or keep) this node's lease from the ``Store``, make the
bridge exist with a pinned MAC, the gateway address and forwarding on, publish the node
file for the plugin, then mark and sweep the routes this agent owns (recognised by its
route protocol number, so routes it left in an earlier life are found and removed at
start): one ``<subnet> via <node ip>`` per other node, never a next hop that is not
on-link. ``run`` reconciles at start, then whenever the store changes (``Store.wait``:
inotify for the file store) or the kernel's IPv4 addresses or routes change (an rtnetlink
multicast subscription), plus a slow safety resync; there is no fixed short poll.
Kernel I/O through pyroute2, in the namespace the agent runs in.

When the store cannot be reached (``StoreUnavailable``, e.g. etcd down) the agent runs
**degraded**: it keeps the node's last known subnet and bridge, never deletes a route
(it only re-adds routes from the last lease set it read), keeps publishing the node file
with ``degraded`` set (so ADD keeps working and STATUS warns), retries every few seconds
and converges when the store is back. A node whose lease vanished meanwhile (its etcd
lease expired) claims its previous subnet again if nobody took it, so its pods keep their
addresses; at start the previous subnet comes from the node file of the earlier life.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from dcnet.cni import ip4, nodestate
from dcnet.cni.agentlock import network_lock
from dcnet.cni.config import NetConf
from dcnet.cni.routes import Change, desired_routes, diff, route_refusal
from dcnet.cni.store import Lease, Store, StoreUnavailable
from dcnet.cni.subnets import acquire
from dcnet.metrics import cni as cni_metrics

RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTN_LOCAL = 2
MAIN_TABLE = 254
BRIDGE_MAC_PREFIX = b"\x0a\x58"


class AgentError(RuntimeError):
    """The agent cannot do its job (bad node IP, no subnet, ...)."""


class Agent:
    """The agent of one node for one dcnet network."""

    def __init__(self, conf: NetConf, store: Store, node: str, node_ip: str | None = None,
                 iface: str | None = None, log: Callable[[str], None] | None = None):
        if conf.cluster_cidr is None:
            raise AgentError("the network config has no clusterCIDR")
        if not node_ip and not iface:
            raise AgentError("give the node IP or the interface that carries it")
        self.conf, self.store, self.node = conf, store, node
        self.fixed_ip, self.iface = node_ip, iface
        self.cluster = ip4.fmt_cidr(*conf.cluster_cidr)
        self.log = log or (lambda text: print(f"dcnet-agent: {text}", file=sys.stderr,
                                              flush=True))
        self.ipr = IPRoute()
        self.started = nodestate.process_start_time(os.getpid())
        self._reported: set[str] = set()
        self.refused: list[str] = []
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.lease: Lease | None = self._previous_lease()  # last known own lease
        self.known: list[Lease] | None = None  # the lease set of the last good read
        self.degraded: str | None = None  # "etcd unreachable since ..." while it lasts
        self.degraded_since: float | None = None
        self.lock = network_lock(conf.run_dir, conf.name)  # one serving agent per node

    def _previous_lease(self) -> Lease | None:
        """This node's subnet as the node file of an earlier life published it."""
        import json

        try:
            with open(self.conf.node_file) as handle:
                data = json.load(handle)
            lease = Lease(self.node, str(data["nodeIP"]), str(data["subnet"]))
            inside = ipaddress.ip_network(lease.subnet).subnet_of(
                ipaddress.ip_network(self.cluster))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if data.get("node") != self.node or data.get("network") != self.conf.name:
            return None
        return lease if inside else None

    def request_stop(self) -> None:
        """Ask ``run`` to return (safe from a signal handler)."""
        self.stopping.set()
        self.wake.set()

    def close(self) -> None:
        self.ipr.close()
        self.lock.release()

    def _own(self) -> None:
        """Refuse to change the node while another agent owns it (it writes node.json)."""
        if not self.lock.try_acquire():
            raise AgentError(f"dcnet-agent pid {self.lock.holder()} serves network "
                             f"{self.conf.name} on this node ({self.lock.path})")

    # ------------------------------------------------------------ node facts

    def node_ip(self) -> str:
        if self.fixed_ip:
            return self.fixed_ip
        found = self.ipr.link_lookup(ifname=self.iface)
        if not found:
            raise AgentError(f"interface {self.iface} does not exist")
        for addr in self.ipr.get_addr(index=found[0], family=socket.AF_INET):
            return addr.get("address")
        raise AgentError(f"interface {self.iface} has no IPv4 address")

    def current_routes(self) -> dict[str, str]:
        """Our routes (by protocol) in the main table: {dst: via}."""
        out = {}
        for route in self.ipr.route("dump", family=socket.AF_INET, table=MAIN_TABLE):
            if route["proto"] != self.conf.route_protocol:
                continue
            dst = f"{route.get('dst') or '0.0.0.0'}/{route['dst_len']}"
            out[dst] = route.get("gateway")
        return out

    def lookup(self, address: str) -> dict | None:
        """How the kernel reaches ``address``: gateway, dev and whether it is local."""
        try:
            route = next(iter(self.ipr.route("get", dst=address)))
        except NetlinkError:
            return None
        if route["type"] not in (1, RTN_LOCAL):  # unicast or local
            return None
        oif = route.get("oif")
        dev = None
        if oif:
            links = self.ipr.get_links(oif)
            dev = links[0].get("ifname") if links else None
        return {"gateway": route.get("gateway"), "dev": dev,
                "local": route["type"] == RTN_LOCAL}

    # ------------------------------------------------------------ node set-up

    def setup_bridge(self, lease: Lease) -> None:
        net, plen = ip4.parse_cidr(lease.subnet, strict=True)
        gateway = net + 1
        mac = ip4.mac_from_ip(BRIDGE_MAC_PREFIX, gateway)
        name = self.conf.bridge
        found = self.ipr.link_lookup(ifname=name)
        if not found:
            self.ipr.link("add", ifname=name, kind="bridge", address=mac)
            found = self.ipr.link_lookup(ifname=name)
            self.log(f"created bridge {name} ({mac})")
        index = found[0]
        link = self.ipr.get_links(index)[0]
        if link.get("address") != mac:
            self.ipr.link("set", index=index, address=mac)  # pinned: ports never change it
        wanted = (ip4.fmt_ip(gateway), plen)
        cluster = ipaddress.ip_network(self.cluster)
        present = set()
        for addr in self.ipr.get_addr(index=index, family=socket.AF_INET):
            here = (addr.get("address"), addr["prefixlen"])
            present.add(here)
            if here != wanted and ipaddress.ip_address(here[0]) in cluster:
                self.ipr.addr("del", index=index, address=here[0], prefixlen=here[1])
                self.log(f"removed stale gateway {here[0]}/{here[1]} from {name}")
        if wanted not in present:
            self.ipr.addr("add", index=index, address=wanted[0], prefixlen=plen)
        self.ipr.link("set", index=index, state="up")
        with open("/proc/sys/net/ipv4/ip_forward", "r+") as handle:
            if handle.read().strip() != "1":
                handle.seek(0)
                handle.write("1")

    # ------------------------------------------------------------ reconcile

    def reconcile(self) -> dict:
        """One full pass; returns what it did (``degraded`` set when the store was out of
        reach and the pass ran on what the agent knew). Only the node's owning agent
        (``AgentLock``) reconciles: AgentError otherwise."""
        self._own()
        node_ip = self.node_ip()
        try:
            lease, leases = self.read_store(node_ip)
        except StoreUnavailable as exc:
            return self.reconcile_degraded(node_ip, exc)
        if self.degraded is not None:
            self.log(f"store reachable again after {time.time() - self.degraded_since:.0f} s "
                     f"({self.degraded}): converging")
        self.degraded = self.degraded_since = None
        self.lease, self.known = lease, leases
        self.setup_bridge(lease)
        desired, refused = self.desired(leases)
        changes = diff(desired, self.current_routes())
        for change in changes:
            self.apply(change)
        self.publish(lease, node_ip)
        return {"lease": lease, "changes": changes, "refused": refused, "degraded": None}

    def read_store(self, node_ip: str) -> tuple[Lease, list[Lease]]:
        """This node's lease (kept, re-claimed or newly claimed) and every lease of the
        cluster CIDR; StoreUnavailable when the store cannot be reached."""
        self.reclaim_previous(node_ip)
        lease = acquire(self.store, self.cluster, self.conf.subnet_len, self.node, node_ip)
        self.store.hold(lease)
        cluster = ipaddress.ip_network(self.cluster)
        leases = [le for le in self.store.leases()
                  if ipaddress.ip_network(le.subnet).subnet_of(cluster)]
        return lease, leases

    def reclaim_previous(self, node_ip: str) -> None:
        """Claim this node's last known subnet again when its lease is gone (expired
        while the store was out of reach, or a restart after the TTL) and it is free."""
        previous = self.lease
        if previous is None:
            return
        leases = self.store.leases()
        if any(le.node == self.node for le in leases):
            return
        holder = next((le.node for le in leases if le.subnet == previous.subnet), None)
        if holder is not None:
            self.log(f"this node's previous subnet {previous.subnet} is now held by "
                     f"{holder}: taking another one (pods on the old subnet lose their "
                     f"routes)")
            self.lease = None
            return
        if self.store.claim(Lease(self.node, node_ip, previous.subnet)):
            self.log(f"claimed this node's previous subnet {previous.subnet} again")

    def reconcile_degraded(self, node_ip: str, exc: StoreUnavailable) -> dict:
        """The store is out of reach: keep the subnet, bridge and routes the agent knows,
        re-add (never delete) routes from the last lease set, publish ``degraded``."""
        if self.degraded_since is None:
            self.degraded_since = time.time()
            self.log(f"degraded: {exc}; keeping routes and the node subnet")
        since = datetime.fromtimestamp(self.degraded_since, UTC)
        self.degraded = f"{exc.summary} since {since:%Y-%m-%dT%H:%M:%SZ}"
        lease = self.lease
        if lease is None:
            raise AgentError(f"no subnet yet and the store is out of reach ({exc})")
        self.setup_bridge(lease)
        changes: list[Change] = []
        if self.known is not None:
            desired, _refused = self.desired(self.known)
            changes = [c for c in diff(desired, self.current_routes()) if c.action != "del"]
            for change in changes:
                self.apply(change)
        self.publish(lease, node_ip)
        return {"lease": lease, "changes": changes, "refused": self.refused,
                "degraded": self.degraded}

    def desired(self, leases: list[Lease]) -> tuple[dict[str, str], list[str]]:
        """Routes to every other node's subnet, and the refusals (logged once each)."""
        desired, refused = {}, []
        for dst, via in desired_routes(leases, self.node).items():
            owner = next(le.node for le in leases if le.subnet == dst)
            problem = route_refusal(dst, via, owner, self.lookup(via))
            if problem:
                refused.append(problem)
            else:
                desired[dst] = via
        for problem in refused:
            if problem not in self._reported:
                self.log(problem)
        self._reported = set(refused)
        self.refused = refused
        return desired, refused

    def apply(self, change: Change) -> None:
        spec = {"dst": change.dst, "family": socket.AF_INET, "table": MAIN_TABLE,
                "proto": self.conf.route_protocol}
        if change.action == "del":
            try:
                self.ipr.route("del", **spec)
            except NetlinkError as exc:
                if exc.code != 3:  # ESRCH: already gone
                    raise
        else:
            self.ipr.route("replace", gateway=change.via, **spec)
        self.log(f"route {change}")

    def publish(self, lease: Lease, node_ip: str) -> None:
        net, _plen = ip4.parse_cidr(lease.subnet, strict=True)
        nodestate.write(self.conf.node_file, {
            "network": self.conf.name, "node": self.node, "nodeIP": node_ip,
            "subnet": lease.subnet, "gateway": ip4.fmt_ip(net + 1), "bridge": self.conf.bridge,
            "agentPid": os.getpid(), "agentStart": self.started,
            "refusedRoutes": self.refused, "degraded": self.degraded,
        })

    # ------------------------------------------------------------ leaving

    def leave(self) -> Lease | None:
        """Give up this node's lease and remove the routes this agent owns here."""
        self._own()
        mine = [le for le in self.store.leases() if le.node == self.node]
        for lease in mine:
            self.store.release(lease.subnet)
            self.log(f"released {lease.subnet}")
        for dst in self.current_routes():
            self.apply(Change("del", dst, None))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.conf.node_file)
        return mine[0] if mine else None

    # ------------------------------------------------------------ running

    def run(self, resync: float = 300.0, retry: float = 2.0, leave_on_exit: bool = False
            ) -> None:
        """Reconcile now, then on every change signal until ``request_stop`` (then give
        the lease back only with ``leave_on_exit``: by default a stopped agent's routes
        stay, and a restart keeps the node's subnet). While another agent serves the node
        this one stands by (``AgentLock.acquire``) and takes over when that one exits."""
        stop, wake = self.stopping, self.wake
        if not self.lock.acquire(stop, self.log, f"network {self.conf.name} on this node"):
            return
        threads = [
            threading.Thread(target=self._watch_store, args=(stop, wake), daemon=True,
                             name="store-watch"),
            threading.Thread(target=self._watch_kernel, args=(stop, wake), daemon=True,
                             name="kernel-watch"),
        ]
        for thread in threads:
            thread.start()
        while not stop.is_set():
            wait = resync
            try:
                result = self.reconcile()
                cni_metrics.reconcile(result)
                if result["changes"]:
                    self.log(f"reconciled: {len(result['changes'])} change(s)")
                if result["degraded"]:
                    wait = retry  # try the store again soon
            except Exception as exc:  # keep serving; report and retry soon
                self.log(f"reconcile failed: {type(exc).__name__}: {exc}")
                cni_metrics.reconcile(None)
                wait = retry
            wake.wait(wait)
            if not stop.is_set():
                time.sleep(0.05)  # coalesce a burst of events into one pass
            wake.clear()
        for thread in threads:
            thread.join(timeout=2.0)
        if leave_on_exit:
            try:
                self.leave()
            except Exception as exc:  # e.g. store unreachable: the lease then expires
                self.log(f"leaving failed: {type(exc).__name__}: {exc}")

    def _watch_store(self, stop: threading.Event, wake: threading.Event) -> None:
        while not stop.is_set():
            try:
                if self.store.wait(1.0):
                    wake.set()
            except Exception as exc:
                self.log(f"store watch failed: {exc}")
                stop.wait(1.0)

    def _watch_kernel(self, stop: threading.Event, wake: threading.Event) -> None:
        import select

        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            sock.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE))
            while not stop.is_set():
                ready, _, _ = select.select([sock], [], [], 1.0)
                if ready:
                    sock.recv(1 << 16)
                    wake.set()
        finally:
            sock.close()
