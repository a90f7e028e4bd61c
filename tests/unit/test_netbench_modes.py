"""netbench modes as data: every topology validates, ranges are distinct, the catalogue."""

from __future__ import annotations

import io
import ipaddress

import pytest

from dcnet.lab.topology import Topology
from dcnet.netbench import catalogue, topologies
from dcnet.netbench.progress import Progress, format_seconds, headline

pytestmark = pytest.mark.unit

BUILT = {
    "veth": topologies.veth(), "bridge": topologies.bridge(), "macvlan": topologies.macvlan(),
    "host-gw": topologies.host_gw(), "vxlan": topologies.vxlan(), "ipvs": topologies.ipvs(),
    "cni-hostgw": topologies.cni_nodes(66), "cni-bridge": topologies.cni_nodes(67, True),
}


@pytest.mark.parametrize("name", sorted(BUILT))
def test_topology_validates(name):
    Topology.from_dict(BUILT[name])


def _networks(topology: dict) -> set[ipaddress.IPv4Network]:
    found = set()
    for link in topology.get("links", []):
        for end in (link["a"], link["b"]):
            found |= {ipaddress.ip_interface(a).network for a in end.get("addresses", [])}
    for bridge in topology.get("bridges", []):
        found |= {ipaddress.ip_interface(a).network for a in bridge.get("addresses", [])}
    return {n for n in found if n.prefixlen < 32}


def test_each_mode_has_its_own_address_ranges():
    seen: dict[ipaddress.IPv4Network, str] = {}
    for name, topology in BUILT.items():
        for network in _networks(topology):
            assert network not in seen, f"{name} reuses {network} of {seen.get(network)}"
            seen[network] = name


def test_cross_node_modes_share_the_switched_underlay_shape():
    for topology in (topologies.host_gw(), topologies.vxlan(), topologies.cni_nodes(66)):
        ports = [link["b"] for link in topology["links"] if link["b"]["host"] == "sw"]
        assert [p.get("bridge") for p in ports] == ["br0", "br0"]


def test_vxlan_pods_get_the_overlay_mtu_and_no_underlay_routes():
    topology = topologies.vxlan()
    pod_ends = [end for link in topology["links"] for end in (link["a"], link["b"])
                if end["host"] in ("p1", "p2")]
    assert {end["mtu"] for end in pod_ends} == {topologies.VXLAN_MTU}
    assert {r["host"] for r in topology["routes"]} == {"p1", "p2"}


def test_ipvs_vip_lives_on_the_director():
    director = next(link["b"] for link in topologies.ipvs()["links"] if link["b"]["host"] == "d")
    assert f"{topologies.IPVS_VIP}/32" in director["addresses"]


def test_catalogue():
    assert {"loopback", "veth"} <= catalogue.MODE_NAMES
    assert catalogue.info("vxlan").cross_node and not catalogue.info("veth").cross_node
    with pytest.raises(KeyError):
        catalogue.info("nope")


def test_progress_lines():
    stream = io.StringIO()
    progress = Progress(4, stream=stream)
    progress.step("veth tcp-1: 9.00 Gb/s")
    progress.step("veth udp: 0.40 Gb/s")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[######..................] 1/4 ")
    assert lines[1].startswith("[############............] 2/4 ")
    assert lines[1].endswith("veth udp: 0.40 Gb/s")
    assert format_seconds(125) == "2m05s"
    assert headline("latency", {"p50_us": 9.04, "p99_us": 23.2}) == "p50 9.0 us, p99 23.2 us"
    assert headline("connrate", {"connections_per_s": 5000.4}) == "5000 conn/s"
    quiet = io.StringIO()
    Progress(1, stream=quiet, enabled=False).step("x")
    assert quiet.getvalue() == ""
