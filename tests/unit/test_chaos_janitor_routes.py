"""The janitor's host-gw routes part, its pure judgement: an agent route is unused when
no other node's lease explains its destination (a node gone, an expired lease), when it
routes this node's own subnet, or when it lies outside the cluster ranges; a route to
another node's leased subnet (either family) is never listed."""

from __future__ import annotations

from dcnet.chaos.janitor_routes import judge
from dcnet.cni.store import Lease

CLUSTERS = ["10.244.0.0/16", "fd00:10::/48"]
LEASES = [Lease("n1", "192.168.100.1", "10.244.0.0/24"),
          Lease("n2", "192.168.100.2", "10.244.1.0/24"),
          Lease("n2", "fd00:100::2", "fd00:10:0:1::/64")]


def test_routes_to_other_nodes_leases_are_explained():
    routes = {"10.244.1.0/24": "192.168.100.2", "fd00:10:0:1::/64": "fd00:100::2"}
    assert judge(routes, LEASES, "n1", CLUSTERS) == []


def test_each_unexplained_route_has_its_reason():
    routes = {"10.244.1.0/24": "192.168.100.2", "10.244.9.0/24": "192.168.100.9",
              "fd00:10:0:9::/64": "fd00:100::9", "10.244.0.0/24": "192.168.100.1",
              "10.99.0.0/24": "192.168.100.2"}
    found = judge(routes, LEASES, "n1", CLUSTERS)
    assert [r["dst"] for r in found] == ["10.244.0.0/24", "10.244.9.0/24", "10.99.0.0/24",
                                         "fd00:10:0:9::/64"]
    reasons = {r["dst"]: r["reason"] for r in found}
    assert "own subnet" in reasons["10.244.0.0/24"]
    assert "no node holds a lease" in reasons["10.244.9.0/24"]
    assert "no node holds a lease" in reasons["fd00:10:0:9::/64"]
    assert "outside the network's cluster ranges" in reasons["10.99.0.0/24"]
    assert found[1]["via"] == "192.168.100.9"


def test_a_lease_outside_the_cluster_ranges_explains_nothing():
    leases = [*LEASES, Lease("n3", "192.168.100.3", "10.99.0.0/24")]
    found = judge({"10.99.0.0/24": "192.168.100.3"}, leases, "n1", CLUSTERS)
    assert [r["dst"] for r in found] == ["10.99.0.0/24"]


def test_without_a_known_node_every_leased_subnet_counts_as_another_nodes():
    assert judge({"10.244.0.0/24": "192.168.100.1"}, LEASES, None, CLUSTERS) == []
