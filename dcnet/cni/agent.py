"""The host-gw node agent: the node's subnet lease, its bridge, and routes to other nodes.

One ``reconcile`` pass: take (or keep) this node's lease from the ``Store``, make the
bridge exist with a pinned MAC, the gateway address and forwarding on, publish the node
file for the plugin, then mark and sweep the routes this agent owns (recognised by its
route protocol number, so routes it left in an earlier life are found and removed at
start): one ``<subnet> via <node ip>`` per other node, never a next hop that is not
on-link. ``run`` reconciles at start, then whenever the store changes (``Store.wait``:
inotify for the file store) or the kernel's IPv4 addresses or routes change (an rtnetlink
multicast subscription; with an IPv6 range also global IPv6 addresses and non-kernel
IPv6 routes: ``kernel_event_matters``), plus a slow safety resync; there is no fixed
short poll.
Kernel I/O through pyroute2, in the namespace the agent runs in.

When the store cannot be reached (``StoreUnavailable``, e.g. etcd down) the agent runs
**degraded**: it keeps the node's last known subnet and bridge, never deletes a route
(it only re-adds routes from the last lease set it read), keeps publishing the node file
with ``degraded`` set (so ADD keeps working and STATUS warns), retries every few seconds
and converges when the store is back. A node whose lease vanished meanwhile (its etcd
lease expired) claims its previous subnet again if nobody took it, so its pods keep their
addresses; at start the previous subnet comes from the node file of the earlier life.

Dual stack: with an IPv4 and/or an IPv6 cluster range the node holds one lease per
family (each a ``Lease`` of that family's subnet and the node's address of that family:
``--node-ip v4,v6``, or the global addresses of ``--iface``), the bridge carries both
gateways (``agentbridge``) and the routes of both families are marked and swept alike
(``ip -6 route ... via <node IPv6> proto 217``).
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

from dcnet.cni import ip4, ip6, nodestate
from dcnet.cni.agentbridge import setup_bridge
from dcnet.cni.agentlock import network_lock
from dcnet.cni.config import NetConf
from dcnet.cni.routes import Change, desired_routes, diff, route_refusal
from dcnet.cni.store import Lease, Store, StoreUnavailable
from dcnet.cni.subnets import acquire
from dcnet.metrics import cni as cni_metrics

RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
RTN_LOCAL = 2
MAIN_TABLE = 254
IFA_F_TEMPORARY, IFA_F_DADFAILED, IFA_F_DEPRECATED = 0x01, 0x08, 0x20
FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}


def version_of(cidr: str) -> int:
    return 6 if ":" in cidr else 4


def kernel_event_matters(data: bytes) -> bool:
    """Whether an rtnetlink multicast datagram may change what the agent wants: any IPv4
    address or route event, an IPv6 address event of global scope, an IPv6 route event in
    the main table not made by the kernel. Every pod's host veth gets an IPv6 link-local
    address and route (and DAD finishing changes them again): those must not wake a
    reconcile pass per pod."""
    offset = 0
    while offset + 20 <= len(data):
        length = int.from_bytes(data[offset:offset + 4], sys.byteorder)
        kind = int.from_bytes(data[offset + 4:offset + 6], sys.byteorder)
        body = data[offset + 16:offset + length]
        if length < 16:
            return True  # malformed: reconcile to be safe
        offset += (length + 3) & ~3
        if not body or body[0] != socket.AF_INET6:
            return True
        if kind in (20, 21) and len(body) >= 4 and body[3] == 0:  # RTM_{NEW,DEL}ADDR, global
            return True
        if kind in (24, 25) and len(body) >= 6 and body[4] == MAIN_TABLE and body[5] != 2:
            return True  # RTM_{NEW,DEL}ROUTE in main, not RTPROT_KERNEL
    return False


class AgentError(RuntimeError):
    """The agent cannot do its job (bad node IP, no subnet, ...)."""


class Agent:
    """The agent of one node for one dcnet network."""

    def __init__(self, conf: NetConf, store: Store, node: str, node_ip: str | None = None,
                 iface: str | None = None, log: Callable[[str], None] | None = None):
        if conf.cluster_cidr is None and conf.cluster_cidr6 is None:
            raise AgentError("the network config has no clusterCIDR")
        if not node_ip and not iface:
            raise AgentError("give the node IP or the interface that carries it")
        self.conf, self.store, self.node = conf, store, node
        self.iface = iface
        # {4: cluster, 6: cluster}: the families this network has, with their node subnet size
        self.clusters: dict[int, str] = {}
        self.subnet_lens: dict[int, int] = {4: conf.subnet_len, 6: conf.subnet_len6}
        if conf.cluster_cidr is not None:
            self.clusters[4] = ip4.fmt_cidr(*conf.cluster_cidr)
        if conf.cluster_cidr6 is not None:
            self.clusters[6] = ip6.fmt_cidr(*conf.cluster_cidr6)
        self.cluster = next(iter(self.clusters.values()))  # the first (IPv4 if any)
        self.fixed_ips: dict[int, str] = {}
        for text in (node_ip or "").split(","):
            if text.strip():
                self.fixed_ips[version_of(text)] = text.strip()
        self.log = log or (lambda text: print(f"dcnet-agent: {text}", file=sys.stderr,
                                              flush=True))
        self.ipr = IPRoute()
        self.started = nodestate.process_start_time(os.getpid())
        self._reported: set[str] = set()
        self.refused: list[str] = []
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.leases: dict[int, Lease] = self._previous_leases()  # last known own leases
        self.known: list[Lease] | None = None  # the lease set of the last good read
        self.degraded: str | None = None  # "etcd unreachable since ..." while it lasts
        self.degraded_since: float | None = None
        self.lock = network_lock(conf.run_dir, conf.name)  # one serving agent per node

    @property
    def lease(self) -> Lease | None:
        """The node's first lease (IPv4 if it has one)."""
        return next(iter(self.leases.values()), None)

    def _previous_leases(self) -> dict[int, Lease]:
        """This node's subnets as the node file of an earlier life published them."""
        import json

        out: dict[int, Lease] = {}
        try:
            with open(self.conf.node_file) as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return out
        if (not isinstance(data, dict) or data.get("node") != self.node
                or data.get("network") != self.conf.name):
            return out
        for version, suffix in ((4, ""), (6, "6")):
            try:
                lease = Lease(self.node, str(data[f"nodeIP{suffix}"]),
                              str(data[f"subnet{suffix}"]))
                inside = version in self.clusters and ipaddress.ip_network(
                    lease.subnet).subnet_of(ipaddress.ip_network(self.clusters[version]))
            except (ValueError, KeyError, TypeError):
                continue
            if inside:
                out[version] = lease
        return out

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

    def node_ips(self) -> dict[int, str]:
        """This node's address of each family the network has ({4: ..., 6: ...})."""
        return {version: self.node_ip(version) for version in self.clusters}

    def node_ip(self, version: int = 4) -> str:
        if version in self.fixed_ips:
            return self.fixed_ips[version]
        if not self.iface:
            raise AgentError(f"no IPv{version} node address given (--node-ip v4,v6) for "
                             f"the IPv{version} cluster range {self.clusters.get(version)}")
        found = self.ipr.link_lookup(ifname=self.iface)
        if not found:
            raise AgentError(f"interface {self.iface} does not exist")
        for addr in self.ipr.get_addr(index=found[0], family=FAMILIES[version]):
            flags = addr.get("IFA_FLAGS", addr["flags"])
            if version == 6 and (addr["scope"] != 0 or flags & (
                    IFA_F_DADFAILED | IFA_F_DEPRECATED | IFA_F_TEMPORARY)):
                continue  # link-local, a duplicate, deprecated or a privacy address
            return addr.get("address")
        kind = "global IPv6" if version == 6 else "IPv4"
        raise AgentError(f"interface {self.iface} has no {kind} address")

    def current_routes(self) -> dict[str, str]:
        """Our routes (by protocol) in the main table, both families (also one the network
        no longer has, so a config change sweeps its routes): {dst: via}."""
        out = {}
        for version, family in FAMILIES.items():
            for route in self.ipr.route("dump", family=family, table=MAIN_TABLE):
                if route["proto"] != self.conf.route_protocol:
                    continue
                zero = "::" if version == 6 else "0.0.0.0"
                dst = f"{route.get('dst') or zero}/{route['dst_len']}"
                out[dst] = route.get("gateway")
        return out

    def lookup(self, address: str) -> dict | None:
        """How the kernel reaches ``address``: gateway, dev and whether it is local."""
        try:
            route = next(iter(self.ipr.route("get", dst=address,
                                             family=FAMILIES[version_of(address)])))
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

    def setup_bridge(self, leases: dict[int, Lease]) -> None:
        """The bridge with the gateway of each of the node's subnets (``agentbridge``)."""
        gateways = []
        for version in sorted(leases):
            fam = ip6 if version == 6 else ip4
            net, plen = fam.parse_cidr(leases[version].subnet, strict=True)
            gateways.append((fam.fmt_ip(net + 1), plen))
        setup_bridge(self.ipr, self.conf.bridge, gateways, list(self.clusters.values()),
                     self.log)

    # ------------------------------------------------------------ reconcile

    def reconcile(self) -> dict:
        """One full pass; returns what it did (``degraded`` set when the store was out of
        reach and the pass ran on what the agent knew). Only the node's owning agent
        (``AgentLock``) reconciles: AgentError otherwise."""
        self._own()
        node_ip = self.node_ips()
        try:
            mine, leases = self.read_store(node_ip)
        except StoreUnavailable as exc:
            return self.reconcile_degraded(node_ip, exc)
        if self.degraded is not None:
            self.log(f"store reachable again after {time.time() - self.degraded_since:.0f} s "
                     f"({self.degraded}): converging")
        self.degraded = self.degraded_since = None
        self.leases, self.known = mine, leases
        self.setup_bridge(mine)
        desired, refused = self.desired(leases)
        changes = diff(desired, self.current_routes())
        for change in changes:
            self.apply(change)
        self.publish(mine, node_ip)
        return {"lease": self.lease, "leases": mine, "changes": changes, "refused": refused,
                "degraded": None}

    def in_cluster(self, subnet: str, version: int | None = None) -> bool:
        """Whether ``subnet`` lies in this network's cluster range (of ``version``)."""
        net = ipaddress.ip_network(subnet)
        return any(v == net.version and net.subnet_of(ipaddress.ip_network(cidr))
                   for v, cidr in self.clusters.items() if version in (None, v))

    def read_store(self, node_ip: dict[int, str]) -> tuple[dict[int, Lease], list[Lease]]:
        """This node's lease of each family (kept, re-claimed or newly claimed) and every
        lease of the cluster ranges; StoreUnavailable when the store cannot be reached."""
        mine = {}
        for version, cluster in self.clusters.items():
            self.reclaim_previous(version, node_ip[version])
            mine[version] = acquire(self.store, cluster, self.subnet_lens[version], self.node,
                                    node_ip[version])
            self.store.hold(mine[version])
        leases = [le for le in self.store.leases() if self.in_cluster(le.subnet)]
        return mine, leases

    def reclaim_previous(self, version: int, node_ip: str) -> None:
        """Claim this node's last known subnet of ``version`` again when its lease is gone
        (expired while the store was out of reach, or a restart after the TTL) and it is
        free."""
        previous = self.leases.get(version)
        if previous is None:
            return
        leases = [le for le in self.store.leases() if self.in_cluster(le.subnet, version)]
        if any(le.node == self.node for le in leases):
            return
        holder = next((le.node for le in leases if le.subnet == previous.subnet), None)
        if holder is not None:
            self.log(f"this node's previous subnet {previous.subnet} is now held by "
                     f"{holder}: taking another one (pods on the old subnet lose their "
                     f"routes)")
            del self.leases[version]
            return
        if self.store.claim(Lease(self.node, node_ip, previous.subnet)):
            self.log(f"claimed this node's previous subnet {previous.subnet} again")

    def reconcile_degraded(self, node_ip: dict[int, str], exc: StoreUnavailable) -> dict:
        """The store is out of reach: keep the subnet, bridge and routes the agent knows,
        re-add (never delete) routes from the last lease set, publish ``degraded``."""
        if self.degraded_since is None:
            self.degraded_since = time.time()
            self.log(f"degraded: {exc}; keeping routes and the node subnet")
        since = datetime.fromtimestamp(self.degraded_since, UTC)
        self.degraded = f"{exc.summary} since {since:%Y-%m-%dT%H:%M:%SZ}"
        mine = self.leases
        if not mine:
            raise AgentError(f"no subnet yet and the store is out of reach ({exc})")
        self.setup_bridge(mine)
        changes: list[Change] = []
        if self.known is not None:
            desired, _refused = self.desired(self.known)
            changes = [c for c in diff(desired, self.current_routes()) if c.action != "del"]
            for change in changes:
                self.apply(change)
        self.publish(mine, node_ip)
        return {"lease": self.lease, "leases": mine, "changes": changes,
                "refused": self.refused, "degraded": self.degraded}

    def desired(self, leases: list[Lease]) -> tuple[dict[str, str], list[str]]:
        """Routes to every other node's subnet, and the refusals (logged once each)."""
        desired, refused = {}, []
        for dst, via in desired_routes(leases, self.node).items():
            owner = next(le.node for le in leases if le.subnet == dst)
            if version_of(dst) != version_of(via):  # a lease written by something else
                problem = (f"refusing route {dst} via {via} (node {owner}): the next hop is "
                           f"not an IPv{version_of(dst)} address")
            else:
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
        spec = {"dst": change.dst, "family": FAMILIES[version_of(change.dst)],
                "table": MAIN_TABLE, "proto": self.conf.route_protocol}
        if change.action == "del":
            try:
                self.ipr.route("del", **spec)
            except NetlinkError as exc:
                if exc.code != 3:  # ESRCH: already gone
                    raise
        else:
            self.ipr.route("replace", gateway=change.via, **spec)
        self.log(f"route {change}")

    def publish(self, leases: dict[int, Lease], node_ip: dict[int, str]) -> None:
        data: dict = {"network": self.conf.name, "node": self.node}
        for version, suffix in ((4, ""), (6, "6")):
            lease = leases.get(version)
            fam = ip6 if version == 6 else ip4
            net = fam.parse_cidr(lease.subnet, strict=True)[0] if lease else None
            data.update({f"nodeIP{suffix}": node_ip.get(version) if lease else None,
                         f"subnet{suffix}": lease.subnet if lease else None,
                         f"gateway{suffix}": fam.fmt_ip(net + 1) if lease else None})
        data.update({"bridge": self.conf.bridge, "agentPid": os.getpid(),
                     "agentStart": self.started, "refusedRoutes": self.refused,
                     "degraded": self.degraded})
        nodestate.write(self.conf.node_file, data)

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
        groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE
        if 6 in self.clusters:
            groups |= RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
        try:
            sock.bind((0, groups))
            while not stop.is_set():
                ready, _, _ = select.select([sock], [], [], 1.0)
                if ready and kernel_event_matters(sock.recv(1 << 16)):
                    wake.set()
        finally:
            sock.close()
