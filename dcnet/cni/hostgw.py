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
"""

from __future__ import annotations

import os
import sys

from dcnet.cni import ip4, nodestate, reaper
from dcnet.cni.args import parse_args
from dcnet.cni.config import NetConf, load_conf, runtime_requests
from dcnet.cni.errors import (
    CHECK_FAILED,
    INVALID_CONFIG,
    LINK_FAILURE,
    NOT_AVAILABLE,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
    CniError,
)
from dcnet.cni.ipam import Reservations, pool
from dcnet.cni.nsref import resolve
from dcnet.cni.rtnl import AF_NETLINK, NETLINK_ROUTE, Netlink
from dcnet.cni.version import to_canonical
from dcnet.hashing import fnv1a_64
from dcnet.undo import Undo

VETH_PREFIX = "dcn"
POD_MAC_PREFIX = b"\x0a\x58"
HOST_MAC_PREFIX = b"\x0a\x59"
DEFAULT_DST = "0.0.0.0/0"


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
        requested_ip, requested_mac = runtime_requests(conf, parse_args(args.args))
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
        reservations = Reservations(conf.ipam_dir)
        with reservations:
            address = reservations.reserve(args.container_id, args.ifname, node.subnet,
                                           node.plen, requested_ip)
        undo.push(f"release {ip4.fmt_ip(address)}",
                  lambda: _release(reservations, address))
        host_name = host_veth_name(args.container_id, args.ifname)
        pod_mac = requested_mac or ip4.mac_from_ip(POD_MAC_PREFIX, address)
        host_mac = ip4.mac_from_ip(HOST_MAC_PREFIX, address)
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
            pod.add_address(link["index"], ip4.ip_bytes(address), node.plen,
                            ip4.ip_bytes(ip4.broadcast(address, node.plen)))
            pod.add_route(b"\0\0\0\0", 0, ip4.ip_bytes(node.gateway), link["index"])
        except OSError as exc:
            raise CniError(LINK_FAILURE, f"configuring {args.ifname} in {args.netns} failed",
                           str(exc)) from None
        finally:
            pod.close()
        return self._result(args, conf, node, address, host_name, host_mac, pod_mac, prev)

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
    def _result(args, conf: NetConf, node, address: int, host_name: str, host_mac: str,
                pod_mac: str, prev) -> dict:
        result = prev or {"interfaces": [], "ips": [], "routes": [], "dns": {}}
        base = len(result["interfaces"])
        result["interfaces"] += [
            {"name": host_name, "mac": host_mac},
            {"name": args.ifname, "mac": pod_mac, "mtu": conf.mtu, "sandbox": args.netns},
        ]
        gateway = ip4.fmt_ip(node.gateway)
        result["ips"].append({"address": ip4.fmt_cidr(address, node.plen),
                              "gateway": gateway, "interface": base + 1})
        result["routes"].append({"dst": DEFAULT_DST, "gw": gateway})
        return result

    # ------------------------------------------------------------ DEL

    def delete(self, args) -> None:
        conf = load_conf(args.conf)
        parse_args(args.args)
        with Netlink() as nl:  # first the link (unusable now, deleted soon: reaper)
            reaper.retire(nl, host_veth_name(args.container_id, args.ifname))
        if os.path.isdir(conf.ipam_dir):
            with Reservations(conf.ipam_dir) as reservations:
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
            with Reservations(conf.ipam_dir) as reservations:
                for address, cid, ifname in reservations.gc(valid):
                    released.append({"address": ip4.fmt_ip(address), "containerID": cid,
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
        gateway = ip4.ip_bytes(node.gateway)
        if not any(a["index"] == bridge["index"] and a["address"] == gateway
                   for a in nl.addresses()):
            return f"bridge {conf.bridge} lacks gateway {ip4.fmt_ip(node.gateway)}"
    _, first, last = pool(node.subnet, node.plen)
    taken = Reservations(conf.ipam_dir).addresses()
    if sum(1 for a in taken if first <= a <= last) >= last - first + 1:
        return f"no free address left in {ip4.fmt_cidr(node.subnet, node.plen)}"
    return None


class Checker:
    """CHECK: compare prevResult with the live state; reads only."""

    def __init__(self, conf: NetConf, args, prev: dict):
        self.conf, self.args, self.prev = conf, args, prev

    def fail(self, problem: str) -> CniError:
        return CniError(CHECK_FAILED, f"CHECK failed: {problem}")

    def run(self) -> None:
        args, prev = self.args, self.prev
        ours = [i for i, iface in enumerate(prev["interfaces"])
                if iface.get("name") == args.ifname and iface.get("sandbox")]
        if not ours:
            raise self.fail(f"prevResult has no interface {args.ifname} with a sandbox")
        index = ours[-1]
        iface = prev["interfaces"][index]
        if iface["sandbox"] != args.netns:
            raise self.fail(f"prevResult sandbox {iface['sandbox']} is not {args.netns}")
        ips = [ip for ip in prev["ips"] if ip.get("interface") == index]
        if not ips:
            raise self.fail(f"prevResult has no address on {args.ifname}")
        try:
            address, plen = ip4.parse_cidr(ips[0]["address"])
            gateway = ip4.parse_ip(ips[0].get("gateway", ""))
        except ValueError as exc:
            raise self.fail(f"prevResult address: {exc}") from None
        self.check_reservation(address)
        self.check_host_side()
        if not os.path.exists(resolve(args.netns)):
            raise CniError(UNKNOWN_CONTAINER, f"network namespace {args.netns} does not exist")
        self.check_pod_side(iface, address, plen, gateway)

    def check_reservation(self, address: int) -> None:
        owner = Reservations(self.conf.ipam_dir).owner(address)
        if owner != (self.args.container_id, self.args.ifname):
            raise self.fail(f"{ip4.fmt_ip(address)} is reserved for {owner}, not "
                            f"{self.args.container_id}/{self.args.ifname}")

    def check_host_side(self) -> None:
        name = host_veth_name(self.args.container_id, self.args.ifname)
        with Netlink() as nl:
            link, bridge = nl.link(name), nl.link(self.conf.bridge)
        if link is None:
            raise self.fail(f"host veth {name} is missing")
        if bridge is None or link["master"] != bridge["index"]:
            raise self.fail(f"host veth {name} is not in bridge {self.conf.bridge}")

    def check_pod_side(self, iface: dict, address: int, plen: int, gateway: int) -> None:
        pod = _pod_netlink(resolve(self.args.netns))
        try:
            link = pod.link(self.args.ifname)
            if link is None:
                raise self.fail(f"{self.args.ifname} is missing in {self.args.netns}")
            if iface.get("mac") and link["mac"] != iface["mac"].lower():
                raise self.fail(f"{self.args.ifname} has MAC {link['mac']}, prevResult says "
                                f"{iface['mac']}")
            if not link["flags"] & 1:
                raise self.fail(f"{self.args.ifname} is down")
            if not any(a["index"] == link["index"] and a["address"] == ip4.ip_bytes(address)
                       and a["plen"] == plen for a in pod.addresses()):
                raise self.fail(f"{self.args.ifname} lacks {ip4.fmt_cidr(address, plen)}")
            if not any(r["plen"] == 0 and r["gateway"] == ip4.ip_bytes(gateway)
                       and r["oif"] == link["index"] for r in pod.routes()):
                raise self.fail(f"no default route via {ip4.fmt_ip(gateway)} on "
                                f"{self.args.ifname}")
        finally:
            pod.close()
