"""Splitting the cluster CIDR into node subnets and choosing one for a node (pure).

``acquire`` is the lease protocol every agent runs against a ``Store``: keep the node's
existing lease (updating its IP if it changed), else claim the first free subnet; a lost
race (another node claimed it first) just moves on to the next one. A dual-stack node
runs it once per family, each with that family's cluster range, subnet length and node
address; leases of the other family are never its own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from dcnet.cni.store import Lease, Store


class SubnetError(RuntimeError):
    """No subnet can be had (cluster CIDR exhausted, or conflicting leases)."""


def node_subnets(cluster_cidr: str, subnet_len: int) -> Iterator[str]:
    """Every node-sized subnet of the cluster CIDR, in order."""
    network = ipaddress.ip_network(cluster_cidr, strict=True)
    if subnet_len < network.prefixlen:
        raise SubnetError(f"subnetLen /{subnet_len} is larger than the cluster CIDR "
                          f"{cluster_cidr}")
    for subnet in network.subnets(new_prefix=subnet_len):
        yield str(subnet)


def inside(subnet: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """Whether ``subnet`` lies in ``network`` (False across address families)."""
    net = ipaddress.ip_network(subnet)
    return net.version == network.version and net.subnet_of(network)


def own_lease(leases: list[Lease], node: str) -> Lease | None:
    mine = [lease for lease in leases if lease.node == node]
    return mine[0] if mine else None


def acquire(store: Store, cluster_cidr: str, subnet_len: int, node: str,
            node_ip: str) -> Lease:
    """The node's lease: its existing one (IP refreshed) or a newly claimed free subnet."""
    network = ipaddress.ip_network(cluster_cidr)
    leases = store.leases()
    existing = own_lease([le for le in leases if inside(le.subnet, network)], node)
    if existing is not None:
        if existing.node_ip != node_ip:
            existing = Lease(node, node_ip, existing.subnet)
            store.update(existing)
        return existing
    taken = {lease.subnet for lease in leases}
    for subnet in node_subnets(cluster_cidr, subnet_len):
        if subnet in taken:
            continue
        lease = Lease(node, node_ip, subnet)
        if store.claim(lease):
            return lease
    raise SubnetError(f"cluster CIDR {cluster_cidr} has no free /{subnet_len} left "
                      f"({len(taken)} leases)")
