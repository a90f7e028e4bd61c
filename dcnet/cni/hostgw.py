"""The host-gw plugin: ADD, DEL, CHECK, STATUS and GC for pods on a node bridge.

ADD reserves an address from the node's subnet (published by the agent), creates a veth
pair whose host end joins the node bridge and whose other end is created directly in
the pod namespace under CNI_IFNAME, then addresses it and adds the default route via the
bridge gateway. Every step pushes its undo; a failure unwinds the stack, so a failed ADD
leaves no link and no reservation. DEL is best effort and repeatable; it retires the host
veth (down and renamed: unusable at once, deleted by the agent's reaper after DEL answers,
see ``reaper``) before releasing the address; CHECK only reads;
STATUS says whether ADD could succeed (and warns on stderr when the agent runs degraded,
e.g. etcd unreachable: ADD still works then); GC releases what valid attachments do not name.
Kernel I/O goes through ``rtnl`` (no pyroute2 on this path).

Dual stack: the node file lists the node's subnet of each family (``nodestate.Pool``);
ADD reserves one address per family (IPAM per family, one directory), adds each to the
pod interface (IPv6 without DAD: IPAM made it unique, so it is usable at once) with a
default route per family via that family's bridge gateway, and the result lists both.
DEL, GC and STATUS cover both families; CHECK (``hostgwcheck``) checks every address of
the cached result.
"""

from __future__ import annotations

import os
import sys

from dcnet.cni import ip4, ip6, nodestate, reaper
from dcnet.cni.args import parse_args
from dcnet.cni.config import NetConf, load_conf, requested_ips
from dcnet.cni.errors import (
    ADDRESS_UNAVAILABLE,
    INVALID_CONFIG,
    LINK_FAILURE,
    NOT_AVAILABLE,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
    CniError,
)
from dcnet.cni.hostgwcheck import Checker
from dcnet.cni.ipam import Reservations, pool
from dcnet.cni.nsref import resolve
from dcnet.cni.rtnl import AF_INET, AF_INET6, AF_NETLINK, NETLINK_ROUTE, Netlink
from dcnet.cni.version import to_canonical
from dcnet.hashing import fnv1a_64
from dcnet.undo import Undo

VETH_PREFIX = "dcn"
POD_MAC_PREFIX = b"\x0a\x58"
HOST_MAC_PREFIX = b"\x0a\x59"
DEFAULT_DST = {4: "0.0.0.0/0", 6: "::/0"}
EACCES = 13  # adding an IPv6 address where IPv6 is disabled


def host_veth_name(container_id: str, ifname: str) -> str:
    """Deterministic host-side name: 'dcn' + 48 bits of FNV-1a of id/ifname (15 chars)."""
    return f"{VETH_PREFIX}{fnv1a_64(f'{container_id}/{ifname}') >> 16:012x}"


def _pod_netlink(path: str) -> Netlink:
    from _socket import SOCK_CLOEXEC, SOCK_RAW

    from dcnet.sysio.netns import socket_in

    return Netlink(socket_in(path, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE))


def _log(text: str) -> None:
    sys.stderr.write(f"dcnet: {text}\n")


class HostGw:
    """The plugin object handed to ``skel.dispatch``."""

    # ------------------------------------------------------------ ADD

    def add(self, args) -> dict:
        conf = load_conf(args.conf)
        requested_ip, requested_mac = requested_ips(conf, parse_args(args.args))
        prev = to_canonical(conf.prev_result) if conf.prev_result else None
        node = nodestate.read(conf.node_file)
        problem = nodestate.agent_problem(node)
        if problem:
            raise CniError(TRY_AGAIN_LATER, problem, "the node agent keeps routes and the "
                           "subnet lease; ADD waits for it")
        try:
            pod_fd = os.open(resolve(args.netns), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise CniError(UNKNOWN_CONTAINER,
                           f"network namespace {args.netns} does not exist") from None
        undo = Undo()
        nl = Netlink()
        try:
            return self._add(args, conf, node, nl, pod_fd, undo, requested_ip,
                             requested_mac, prev)
        except BaseException:
            errors = undo.unwind()
            for line in errors:
                _log(f"ADD undo failed: {line}")
            raise
        finally:
            os.close(pod_fd)
            nl.close()

    def _add(self, args, conf: NetConf, node, nl: Netlink, pod_fd: int, undo: Undo,
             requested_ip, requested_mac, prev) -> dict:
        bridge = nl.link(conf.bridge)
        if bridge is None:
            raise CniError(TRY_AGAIN_LATER, f"bridge {conf.bridge} does not exist",
                           "dcnet-agent creates it when it takes the node's subnet")
        addresses = self._reserve(args, conf, node, undo, requested_ip)
        host_name = host_veth_name(args.container_id, args.ifname)
        first = addresses[0]
        pod_mac = requested_mac or ip4.mac_from_ip(POD_MAC_PREFIX, first & 0xFFFFFFFF)
        host_mac = ip4.mac_from_ip(HOST_MAC_PREFIX, first & 0xFFFFFFFF)
        try:
            nl.add_veth(host_name, args.ifname, pod_fd, conf.mtu, master=bridge["index"],
                        mac=host_mac, peer_mac=pod_mac,
                        alias=f"dcnet {conf.name} {args.container_id} {args.ifname}")
        except OSError as exc:
            raise self._veth_error(exc, nl, host_name, args) from None
        undo.push(f"delete veth {host_name}", lambda: nl.delete_link(host_name))
        pod = _pod_netlink(resolve(args.netns))
        try:
            link = pod.link(args.ifname)
            if link is None:
                raise CniError(LINK_FAILURE, f"{args.ifname} vanished from {args.netns}")
            pod.set_up(link["index"])
            for address, pool_ in zip(addresses, node.pools, strict=True):
                _configure(pod, args, link["index"], pool_, address)
        except OSError as exc:
            raise CniError(LINK_FAILURE, f"configuring {args.ifname} in {args.netns} failed",
                           str(exc)) from None
        finally:
            pod.close()
        return self._result(args, conf, node, addresses, host_name, host_mac, pod_mac, prev)

    @staticmethod
    def _reserve(args, conf: NetConf, node, undo: Undo, requested: dict[int, int]
                 ) -> list[int]:
        """One address from each of the node's subnets (the requested one if given)."""
        versions = {p.version for p in node.pools}
        for version in requested:
            if version not in versions:
                raise CniError(ADDRESS_UNAVAILABLE, f"an IPv{version} address was requested "
                               f"but network {conf.name} has no IPv{version} range here")
        addresses = []
        for pool_ in node.pools:
            reservations = Reservations(conf.ipam_dir, pool_.fam)
            with reservations:
                address = reservations.reserve(args.container_id, args.ifname, pool_.net,
                                               pool_.plen, requested.get(pool_.version))
            undo.push(f"release {pool_.fam.fmt_ip(address)}",
                      lambda r=reservations, a=address: _release(r, a))
            addresses.append(address)
        return addresses

    @staticmethod
    def _veth_error(exc: OSError, nl: Netlink, host_name: str, args) -> CniError:
        if exc.errno == 17:  # EEXIST
            if nl.link(host_name) is not None:
                return CniError(LINK_FAILURE, f"container {args.container_id} already has "
                                f"{args.ifname} on this network (host veth {host_name})")
            return CniError(LINK_FAILURE, f"interface {args.ifname} already exists in "
                            f"{args.netns}")
        return CniError(LINK_FAILURE, f"creating veth {host_name}/{args.ifname} failed",
                        str(exc))

    @staticmethod
    def _result(args, conf: NetConf, node, addresses: list[int], host_name: str,
                host_mac: str, pod_mac: str, prev) -> dict:
        result = prev or {"interfaces": [], "ips": [], "routes": [], "dns": {}}
        base = len(result["interfaces"])
        result["interfaces"] += [
            {"name": host_name, "mac": host_mac},
            {"name": args.ifname, "mac": pod_mac, "mtu": conf.mtu, "sandbox": args.netns},
        ]
        for address, pool_ in zip(addresses, node.pools, strict=True):
            gateway = pool_.fam.fmt_ip(pool_.gateway)
            result["ips"].append({"address": pool_.fam.fmt_cidr(address, pool_.plen),
                                  "gateway": gateway, "interface": base + 1})
            result["routes"].append({"dst": DEFAULT_DST[pool_.version], "gw": gateway})
        return result

    # ------------------------------------------------------------ DEL

    def delete(self, args) -> None:
        conf = load_conf(args.conf)
        parse_args(args.args)
        with Netlink() as nl:  # first the link (unusable now, deleted soon: reaper)
            reaper.retire(nl, host_veth_name(args.container_id, args.ifname))
        if os.path.isdir(conf.ipam_dir):
            for fam in (ip4, ip6):
                with Reservations(conf.ipam_dir, fam) as reservations:
                    reservations.release(args.container_id, args.ifname)

    # ------------------------------------------------------------ CHECK

    def check(self, args) -> None:
        conf = load_conf(args.conf)
        parse_args(args.args)
        if not conf.prev_result:
            raise CniError(INVALID_CONFIG, "CHECK needs prevResult (the cached ADD result)")
        prev = to_canonical(conf.prev_result)
        Checker(conf, args, prev).run()

    # ------------------------------------------------------------ STATUS

    def status(self, args) -> None:
        conf = load_conf(args.conf)
        problem = status_problem(conf)
        if problem:
            raise CniError(NOT_AVAILABLE, f"dcnet cannot serve ADD: {problem}")
        degraded = nodestate.read(conf.node_file).degraded
        if degraded:  # ADD works (existing subnet, routes kept): ready, with a warning
            _log(f"STATUS: degraded: {degraded}; ADD still works on this node's subnet, "
                 "routes to other nodes are kept as last known")

    # ------------------------------------------------------------ GC

    def gc(self, args) -> dict:
        conf = load_conf(args.conf)
        if conf.valid_attachments is None:
            raise CniError(INVALID_CONFIG, "GC needs cni.dev/valid-attachments")
        valid = set(conf.valid_attachments)
        released: list[dict] = []
        errors: list[str] = []
        if os.path.isdir(conf.ipam_dir):
            for fam in (ip4, ip6):
                with Reservations(conf.ipam_dir, fam) as reservations:
                    for address, cid, ifname in reservations.gc(valid):
                        released.append({"address": fam.fmt_ip(address), "containerID": cid,
                                         "ifname": ifname})
        keep = {host_veth_name(cid, ifname) for cid, ifname in valid}
        removed = []
        with Netlink() as nl:
            bridge = nl.link(conf.bridge)
            for link in nl.links() if bridge else []:
                name = link["name"] or ""
                dying = name.startswith(reaper.DYING_PREFIX)  # retired by a DEL
                if dying or (link["master"] == bridge["index"]
                             and name.startswith(VETH_PREFIX) and name not in keep):
                    try:
                        if nl.delete_link(name):
                            removed.append(name)
                    except OSError as exc:
                        errors.append(f"delete {name}: {exc}")
        for line in errors:
            _log(f"GC: {line}")
        return {"gc": conf.name, "releasedAddresses": released, "removedLinks": removed,
                "errors": errors}


def _configure(pod: Netlink, args, index: int, pool_, address: int) -> None:
    """One family's address and default route on the pod interface."""
    fam = pool_.fam
    if pool_.version == 4:
        pod.add_address(index, fam.ip_bytes(address), pool_.plen,
                        fam.ip_bytes(fam.broadcast(address, pool_.plen)))
    else:
        try:
            pod.add_address(index, fam.ip_bytes(address), pool_.plen, None, nodad=True)
        except OSError as exc:
            if exc.errno != EACCES:
                raise
            _enable_ipv6(args)  # the pod's namespace starts with IPv6 disabled
            pod.add_address(index, fam.ip_bytes(address), pool_.plen, None, nodad=True)
    pod.add_route(bytes(len(fam.ip_bytes(0))), 0, fam.ip_bytes(pool_.gateway), index)


def _enable_ipv6(args) -> None:
    """net.ipv6.conf.{all,<ifname>}.disable_ipv6=0 inside the pod's namespace."""
    from dcnet.sysio.netns import call_here_in

    def write(path: str) -> None:
        with open(path, "w") as handle:
            handle.write("0")
    for name in ("all", args.ifname):
        call_here_in(resolve(args.netns), write, f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6")


def _release(reservations: Reservations, address: int) -> None:
    with reservations:
        reservations.release_address(address)


def status_problem(conf: NetConf) -> str | None:
    """Why ADD could not succeed right now (None when it could)."""
    try:
        node = nodestate.read(conf.node_file)
    except CniError as exc:
        return f"{exc.msg} ({exc.details})"
    problem = nodestate.agent_problem(node)
    if problem:
        return problem
    with Netlink() as nl:
        bridge = nl.link(conf.bridge)
        if bridge is None:
            return f"bridge {conf.bridge} does not exist"
        if not bridge["flags"] & 1:
            return f"bridge {conf.bridge} is down"
        for pool_ in node.pools:
            gateway = pool_.fam.ip_bytes(pool_.gateway)
            family = AF_INET6 if pool_.version == 6 else AF_INET
            if not any(a["index"] == bridge["index"] and a["address"] == gateway
                       for a in nl.addresses(family)):
                return f"bridge {conf.bridge} lacks gateway {pool_.fam.fmt_ip(pool_.gateway)}"
    for pool_ in node.pools:
        _, first, last = pool(pool_.net, pool_.plen, pool_.fam)
        taken = Reservations(conf.ipam_dir, pool_.fam).addresses()
        if sum(1 for a in taken if first <= a <= last) >= last - first + 1:
            return f"no free address left in {pool_.fam.fmt_cidr(pool_.net, pool_.plen)}"
    return None
