"""Contract tests of the CNI's rtnetlink layer (``dcnet.cni.rtnl.Netlink``).

These are the operations the CNI uses: veth and macvlan created straight into another
namespace, rename with alias, up/down, addresses, routes and deletes, each with the
answers callers rely on (EEXIST, False for "already gone"). The suite is parametrised over
``IMPLEMENTATIONS``: the real kernel, in namespaces this test makes (marker netns), and
the stateful fake of unit tests (:mod:`dcnet.cni.fake_rtnl`), which must pass the same
tests.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from dcnet.cni import ip4, ip6
from dcnet.cni.fake_rtnl import FakeKernel
from dcnet.cni.rtnl import AF_INET6, AF_NETLINK, NETLINK_ROUTE, RTPROT_BOOT, Netlink
from dcnet.sysio import netns

IFF_UP = 1
TOPOLOGY = {"hosts": ["node", "pod", "peer"],
            "links": [{"a": {"host": "node", "ifname": "eth0",
                                "addresses": ["10.251.0.1/24"]},
                       "b": {"host": "peer", "ifname": "eth0",
                                "addresses": ["10.251.0.2/24"]}}]}


@dataclass
class World:
    """Two namespaces as the CNI sees them: the node (``node``) and a pod (``pod``), plus
    the descriptor a create call takes to put a link in the pod (``pod_fd``)."""

    node: Netlink
    pod: Netlink
    pod_fd: int
    master: int  # index of the node's uplink eth0


def _real(request) -> Iterator[World]:
    lab = request.getfixturevalue("lab_factory")(TOPOLOGY)

    def open_in(host: str) -> Netlink:
        path = f"/run/netns/{lab.netns(host)}"
        return Netlink(netns.socket_in(path, AF_NETLINK,
                                       socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE))
    node, pod = open_in("node"), open_in("pod")
    pod_fd = os.open(f"/run/netns/{lab.netns('pod')}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        master = node.link("eth0")
        assert master is not None
        yield World(node, pod, pod_fd, master["index"])
    finally:
        os.close(pod_fd)
        node.close()
        pod.close()


def _fake(request) -> Iterator[World]:
    """The same namespaces in a :class:`FakeKernel`: lo up, node and peer joined by veth
    eth0, addressed and up, as the lab leaves them."""
    kernel = FakeKernel()
    for name in TOPOLOGY["hosts"]:                        # the lab brings lo up
        lo = kernel.netlink(name)
        lo.set_up(1)
        lo.add_address(1, _ip("127.0.0.1"), 8, None)
    node_ns, peer_ns = kernel.namespace("node"), kernel.namespace("peer")
    kernel.veth(node_ns, "eth0", peer_ns, "eth0")
    for name, address in (("node", "10.251.0.1"), ("peer", "10.251.0.2")):
        rtnl = kernel.netlink(name)
        index = rtnl.link("eth0")["index"]
        rtnl.add_address(index, _ip(address), 24, _ip("10.251.0.255"))
        rtnl.set_up(index)
    node = kernel.netlink("node")
    yield World(node, kernel.netlink("pod"), kernel.fd("pod"), node.link("eth0")["index"])


IMPLEMENTATIONS: dict[str, Callable[..., Iterator[World]]] = {"fake": _fake, "real": _real}


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.netns)])
def world(request) -> Iterator[World]:
    yield from IMPLEMENTATIONS[request.param](request)


def _ip(text: str) -> bytes:
    return ip4.ip_bytes(ip4.parse_ip(text))


def test_veth_pair_across_namespaces_rename_and_delete(world):
    world.node.add_veth("vh0", "vp0", world.pod_fd, 1400, alias="pod-a")
    host = world.node.link("vh0")
    peer = world.pod.link("vp0")
    assert host is not None and peer is not None
    assert (host["kind"], host["mtu"]) == ("veth", 1400)
    assert host["alias"] is None  # the kernel ignores IFLA_IFALIAS at creation: see rename
    assert host["flags"] & IFF_UP
    assert peer["kind"] == "veth" and peer["mtu"] == 1400
    assert not peer["flags"] & IFF_UP
    assert world.node.link("vp0") is None and world.pod.link("vh0") is None
    with pytest.raises(OSError) as taken:
        world.node.add_veth("vh0", "vp1", world.pod_fd, 1400)
    assert taken.value.errno == errno.EEXIST
    world.pod.rename(peer["index"], "eth0", alias="dcnet/c1/eth0")
    renamed = world.pod.link("eth0")
    assert renamed is not None and renamed["index"] == peer["index"]
    assert renamed["alias"] == "dcnet/c1/eth0"
    world.pod.set_up(renamed["index"])
    assert world.pod.link("eth0")["flags"] & IFF_UP
    world.pod.set_down(renamed["index"])
    assert not world.pod.link("eth0")["flags"] & IFF_UP
    assert world.node.delete_link("vh0") is True
    assert world.node.link("vh0") is None and world.pod.link("eth0") is None  # pair gone
    assert world.node.delete_link("vh0") is False


def test_macvlan_made_in_the_pod_namespace(world):
    mac = "02:00:00:aa:bb:01"
    world.node.add_macvlan("dcnt0", world.master, "bridge", world.pod_fd, 1400, mac,
                           "dcnet/c2/eth0")
    assert world.node.link("dcnt0") is None
    link = world.pod.link("dcnt0")
    assert link is not None
    assert (link["kind"], link["macvlanMode"], link["mac"], link["mtu"]) == (
        "macvlan", "bridge", mac, 1400)
    with pytest.raises(OSError) as taken:
        world.node.add_macvlan("dcnt0", world.master, "bridge", world.pod_fd)
    assert taken.value.errno == errno.EEXIST
    world.node.add_macvlan("shim0", world.master, "private")  # here, in the node
    shim = world.node.link("shim0")
    assert shim is not None and shim["macvlanMode"] == "private"
    assert shim["link"] == world.master
    assert world.pod.delete_link("dcnt0") is True and world.pod.delete_link("dcnt0") is False
    assert world.node.delete_link("shim0") is True


def test_addresses_add_replace_list_delete(world):
    world.node.add_macvlan("mv0", world.master, "bridge", world.pod_fd)
    index = world.pod.link("mv0")["index"]
    world.pod.set_up(index)
    world.pod.add_address(index, _ip("192.168.9.5"), 24, _ip("192.168.9.255"))
    with pytest.raises(OSError) as taken:
        world.pod.add_address(index, _ip("192.168.9.5"), 24, None)
    assert taken.value.errno == errno.EEXIST
    world.pod.replace_address(index, _ip("192.168.9.5"), 24, _ip("192.168.9.255"))
    world.pod.replace_address(index, _ip("192.168.9.6"), 24, None)
    mine = sorted((a["address"], a["plen"]) for a in world.pod.addresses()
                  if a["index"] == index)
    assert mine == [(_ip("192.168.9.5"), 24), (_ip("192.168.9.6"), 24)]
    assert not [a for a in world.node.addresses() if a["address"] == _ip("192.168.9.5")]
    assert world.pod.delete_address(index, _ip("192.168.9.6"), 24) is True
    assert world.pod.delete_address(index, _ip("192.168.9.6"), 24) is False
    assert [a["address"] for a in world.pod.addresses() if a["index"] == index] == [
        _ip("192.168.9.5")]


def test_routes_add_replace_list_delete(world):
    world.node.add_macvlan("mv0", world.master, "bridge", world.pod_fd)
    index = world.pod.link("mv0")["index"]
    world.pod.set_up(index)
    world.pod.add_address(index, _ip("192.168.9.5"), 24, None)

    def default() -> list[dict]:
        return [r for r in world.pod.routes() if r["plen"] == 0]
    world.pod.add_route(b"\0\0\0\0", 0, _ip("192.168.9.1"), index)
    assert default() == [{"dst": b"\0\0\0\0", "plen": 0, "gateway": _ip("192.168.9.1"),
                          "oif": index, "protocol": RTPROT_BOOT}]
    with pytest.raises(OSError) as taken:
        world.pod.add_route(b"\0\0\0\0", 0, _ip("192.168.9.1"), index)
    assert taken.value.errno == errno.EEXIST
    world.pod.replace_route(b"\0\0\0\0", 0, _ip("192.168.9.2"), index)
    assert [r["gateway"] for r in default()] == [_ip("192.168.9.2")]
    world.pod.replace_route(_ip("10.9.9.9"), 32, None, index, protocol=217)
    host_route = [r for r in world.pod.routes() if r["plen"] == 32]
    assert host_route == [{"dst": _ip("10.9.9.9"), "plen": 32, "gateway": None,
                           "oif": index, "protocol": 217}]
    assert world.pod.delete_route(_ip("10.9.9.9"), 32, index) is True
    assert world.pod.delete_route(_ip("10.9.9.9"), 32, index) is False
    assert world.pod.delete_route(b"\0\0\0\0", 0, index) is True
    assert default() == []
    assert world.pod.delete_route(b"\0\0\0\0", 0) is False


def test_connected_routes_follow_addresses_and_link_state(world):
    world.node.add_macvlan("mv0", world.master, "bridge", world.pod_fd, alias="dcnet/c3/eth0")
    link = world.pod.link("mv0")
    index = link["index"]
    assert link["alias"] is None and link["mtu"] == 1500 and link["link"] == world.master
    gateway = _ip("192.168.9.1")
    with pytest.raises(OSError) as down:
        world.pod.add_route(_ip("10.9.9.0"), 24, None, index)
    assert down.value.errno == errno.ENETDOWN
    world.pod.add_address(index, _ip("192.168.9.5"), 24, None)
    assert world.pod.routes() == []                       # no connected route while down
    world.pod.set_up(index)
    connected = {"dst": _ip("192.168.9.0"), "plen": 24, "gateway": None, "oif": index,
                 "protocol": 2}                          # RTPROT_KERNEL
    assert world.pod.routes() == [connected]
    with pytest.raises(OSError) as unreachable:
        world.pod.add_route(b"\0\0\0\0", 0, _ip("192.168.10.1"), index)
    assert unreachable.value.errno == errno.ENETUNREACH
    world.pod.add_route(b"\0\0\0\0", 0, gateway, index)
    world.pod.set_down(index)
    assert world.pod.routes() == []                       # a down link's routes go
    world.pod.set_up(index)
    assert world.pod.routes() == [connected]              # only the connected one returns
    assert world.pod.delete_address(index, _ip("192.168.9.5"), 24) is True
    assert world.pod.routes() == []
    assert world.pod.delete_link("mv0") is True
    assert world.pod.link("mv0") is None
    assert [a for a in world.pod.addresses() if a["index"] == index] == []


def test_missing_links_are_enodev(world):
    for call in (lambda: world.pod.set_up(999), lambda: world.pod.rename(999, "x"),
                 lambda: world.pod.add_address(999, _ip("192.168.9.5"), 24, None),
                 lambda: world.node.add_macvlan("mv9", 999, "bridge")):
        with pytest.raises(OSError) as missing:
            call()
        assert missing.value.errno == errno.ENODEV
    assert world.pod.link("mv9") is None and world.node.link("mv9") is None


def test_rename_onto_a_taken_name_is_eexist(world):
    world.node.add_veth("vh0", "vp0", world.pod_fd, 1400)
    index = world.pod.link("vp0")["index"]
    world.pod.set_down(index)
    with pytest.raises(OSError) as taken:
        world.pod.rename(index, "lo")
    assert taken.value.errno == errno.EEXIST
    assert world.pod.link("vp0")["index"] == index and world.pod.link("lo")["index"] != index
    assert world.node.delete_link("vh0") is True


# ---------------------------------------------------------------- IPv6 (dual-stack host-gw)


def _ip6(text: str) -> bytes:
    return ip6.ip_bytes(ip6.parse_ip(text))


def _global6(rows: list[dict], key: str) -> list[dict]:
    """Rows whose ``key`` address is not link-local (fe80::/10: the kernel's own, which
    the fake does not model)."""
    return [r for r in rows if r[key][:2] != b"\xfe\x80"]


def test_ipv6_addresses_and_routes_beside_ipv4(world):
    world.node.add_veth("vh6", "vp6", world.pod_fd, 1400)
    index = world.pod.link("vp6")["index"]
    world.pod.set_up(index)
    world.pod.add_address(index, _ip("10.9.0.5"), 24, None)
    world.pod.add_address(index, _ip6("fd00:9::5"), 64, None, nodad=True)
    with pytest.raises(OSError) as taken:
        world.pod.add_address(index, _ip6("fd00:9::5"), 64, None, nodad=True)
    assert taken.value.errno == errno.EEXIST
    assert [(a["address"], a["plen"]) for a in _global6(world.pod.addresses(AF_INET6),
                                                         "address")
            if a["index"] == index] == [(_ip6("fd00:9::5"), 64)]
    assert [a["address"] for a in world.pod.addresses() if a["index"] == index] == [
        _ip("10.9.0.5")]                                   # AF_INET lists IPv4 only
    connected6 = {"dst": _ip6("fd00:9::"), "plen": 64, "gateway": None, "oif": index,
                  "protocol": 2}                          # RTPROT_KERNEL, at once (nodad)
    assert _global6(world.pod.routes(family=AF_INET6), "dst") == [connected6]
    zero6 = bytes(16)
    world.pod.add_route(zero6, 0, _ip6("fd00:9::1"), index)
    world.pod.add_route(b"\0\0\0\0", 0, _ip("10.9.0.1"), index)
    default6 = [r for r in world.pod.routes(family=AF_INET6) if r["plen"] == 0]
    assert default6 == [{"dst": zero6, "plen": 0, "gateway": _ip6("fd00:9::1"),
                         "oif": index, "protocol": RTPROT_BOOT}]
    assert [r["gateway"] for r in world.pod.routes() if r["plen"] == 0] == [
        _ip("10.9.0.1")]
    with pytest.raises(OSError) as twice:
        world.pod.add_route(zero6, 0, _ip6("fd00:9::1"), index)
    assert twice.value.errno == errno.EEXIST
    world.pod.replace_route(zero6, 0, _ip6("fd00:9::2"), index)
    assert [r["gateway"] for r in world.pod.routes(family=AF_INET6) if r["plen"] == 0] == [
        _ip6("fd00:9::2")]
    with pytest.raises(OSError) as off_link:
        world.pod.add_route(_ip6("fd00:77::"), 64, _ip6("fd00:8::1"), index)
    assert off_link.value.errno == errno.EHOSTUNREACH
    world.pod.replace_route(_ip6("fd00:77::"), 64, _ip6("fd00:9::7"), index, protocol=217)
    assert [(r["dst"], r["gateway"], r["protocol"]) for r in world.pod.routes(family=AF_INET6)
            if r["plen"] == 64 and r["dst"] == _ip6("fd00:77::")] == [
        (_ip6("fd00:77::"), _ip6("fd00:9::7"), 217)]
    assert world.pod.delete_route(_ip6("fd00:77::"), 64, index) is True
    assert world.pod.delete_route(_ip6("fd00:77::"), 64, index) is False
    assert world.pod.delete_route(zero6, 0, index) is True
    assert [r for r in world.pod.routes(family=AF_INET6) if r["plen"] == 0] == []
    assert world.pod.delete_address(index, _ip6("fd00:9::5"), 64) is True
    assert world.pod.delete_address(index, _ip6("fd00:9::5"), 64) is False
    assert _global6(world.pod.routes(family=AF_INET6), "dst") == []
    assert [r["gateway"] for r in world.pod.routes() if r["plen"] == 0] == [
        _ip("10.9.0.1")]                                   # IPv4 untouched throughout


def test_ipv6_addresses_go_with_the_link_down_ipv4_ones_stay(world):
    world.node.add_veth("vh7", "vp7", world.pod_fd, 1400)
    index = world.pod.link("vp7")["index"]
    world.pod.set_up(index)
    world.pod.add_address(index, _ip("10.9.0.5"), 24, None)
    world.pod.add_address(index, _ip6("fd00:9::5"), 64, None, nodad=True)
    world.pod.set_down(index)
    assert [a for a in world.pod.addresses(AF_INET6) if a["index"] == index] == []
    assert [a["address"] for a in world.pod.addresses() if a["index"] == index] == [
        _ip("10.9.0.5")]
