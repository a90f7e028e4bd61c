"""Pytest plugin: the ``etcd_cluster`` fixture (a 3-member TLS etcd cluster in its own
lab, members on hosts etcd1..etcd3 joined by bridge etcdbr in host etcdsw, clients
talking from etcdsw). Torn down with the lab, even when the test fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dcnet.lab.etcd_lab import EtcdCluster, etcd_hosts_topology, start_etcd_cluster

ETCD_HOSTS = ("etcd1", "etcd2", "etcd3")
SWITCH = "etcdsw"


@pytest.fixture
def etcd_cluster(lab_factory, tmp_path) -> Iterator[EtcdCluster]:
    """A healthy 3-member TLS etcd cluster (no auth yet; see EtcdCluster.enable_auth)."""
    lab = lab_factory(etcd_hosts_topology(hosts=ETCD_HOSTS, switch=SWITCH))
    cluster = start_etcd_cluster(lab, list(ETCD_HOSTS), str(tmp_path / "etcd"),
                                 client_host=SWITCH)
    try:
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.close()
