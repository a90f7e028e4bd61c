"""Unit tests of the allocator, reservation files, the file store's own rules (the Store
contract, tests/test_store_contract.py, runs on every store), route diffs and the on-link
rule."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import pytest

from dcnet.cni import ip4
from dcnet.cni.errors import CniError
from dcnet.cni.hostgw import host_veth_name
from dcnet.cni.ipam import Reservations, next_free, pool
from dcnet.cni.routes import Change, desired_routes, diff, route_refusal
from dcnet.cni.store import FileStore, Lease
from dcnet.cni.subnets import SubnetError, node_subnets

pytestmark = pytest.mark.unit

NET, PLEN = ip4.parse_cidr("10.244.1.0/24")


# ---------------------------------------------------------------- pure allocator


def test_pool_keeps_network_gateway_and_broadcast_out():
    gateway, first, last = pool(NET, PLEN)
    assert (ip4.fmt_ip(gateway), ip4.fmt_ip(first), ip4.fmt_ip(last)) == (
        "10.244.1.1", "10.244.1.2", "10.244.1.254")


def test_next_free_is_round_robin_and_wraps():
    assert next_free(10, 14, set(), None) == 10
    assert next_free(10, 14, set(), 11) == 12
    assert next_free(10, 14, {13, 14}, 12) == 10  # wraps past the end
    assert next_free(10, 14, {10, 11, 12, 13, 14}, 12) is None
    assert next_free(10, 14, set(), 99) == 10  # a marker outside the pool restarts


def test_host_veth_name_is_stable_short_and_distinct():
    names = {host_veth_name(f"c{i}", "eth0") for i in range(2000)}
    assert len(names) == 2000 and all(len(n) == 15 and n.startswith("dcn") for n in names)
    assert host_veth_name("c1", "eth0") == host_veth_name("c1", "eth0")
    assert host_veth_name("c1", "eth0") != host_veth_name("c1", "eth1")


# ---------------------------------------------------------------- reservation files


def test_reserve_writes_host_local_style_files_and_round_robins(tmp_path):
    res = Reservations(str(tmp_path / "net"))
    with res:
        first = res.reserve("c1", "eth0", NET, PLEN)
        second = res.reserve("c2", "eth0", NET, PLEN)
        res.release("c1", "eth0")
        third = res.reserve("c3", "eth0", NET, PLEN)
    assert [ip4.fmt_ip(a) for a in (first, second, third)] == [
        "10.244.1.2", "10.244.1.3", "10.244.1.4"]  # no immediate reuse of .2
    assert (tmp_path / "net" / "10.244.1.3").read_bytes() == b"c2\r\neth0"
    assert (tmp_path / "net" / "last_reserved_ip.0").read_text() == "10.244.1.4"
    assert res.find("c3", "eth0") == [third]


def test_requested_address_checks(tmp_path):
    res = Reservations(str(tmp_path))
    with res:
        got = res.reserve("c1", "eth0", NET, PLEN, ip4.parse_ip("10.244.1.50"))
        assert ip4.fmt_ip(got) == "10.244.1.50"
        for bad in ("10.244.1.50", "10.244.1.1", "10.244.2.5"):
            with pytest.raises(CniError) as caught:
                res.reserve("c2", "eth0", NET, PLEN, ip4.parse_ip(bad))
            assert caught.value.code == 101


def test_exhausted_pool_is_code_100(tmp_path):
    net, plen = ip4.parse_cidr("10.9.0.0/29")  # .2 - .6: five addresses
    res = Reservations(str(tmp_path))
    with res:
        for index in range(5):
            res.reserve(f"c{index}", "eth0", net, plen)
        with pytest.raises(CniError) as caught:
            res.reserve("c9", "eth0", net, plen)
    assert caught.value.code == 100 and "no IP addresses available" in caught.value.msg


def test_changes_need_the_lock(tmp_path):
    with pytest.raises(RuntimeError):
        Reservations(str(tmp_path)).reserve("c", "eth0", NET, PLEN)


def test_gc_releases_everything_not_valid(tmp_path):
    res = Reservations(str(tmp_path))
    with res:
        for cid in ("a", "b", "c"):
            res.reserve(cid, "eth0", NET, PLEN)
        released = res.gc({("b", "eth0")})
    assert [(cid, ifname) for _, cid, ifname in released] == [("a", "eth0"), ("c", "eth0")]
    assert list(res.all().values()) == [("b", "eth0")]


def test_concurrent_reservations_never_duplicate(tmp_path):
    """Many threads, each with its own Reservations object (own lock fd), as separate
    plugin processes would have."""
    directory = str(tmp_path)

    def one(index: int) -> int:
        res = Reservations(directory)
        with res:
            return res.reserve(f"c{index}", "eth0", NET, PLEN)

    with ThreadPoolExecutor(max_workers=16) as workers:
        got = list(workers.map(one, range(100)))
    assert len(set(got)) == 100
    assert len(Reservations(directory).all()) == 100


# ---------------------------------------------------------------- file store


def test_file_store_ignores_foreign_files(tmp_path):
    made = FileStore(str(tmp_path))
    (tmp_path / "leases" / "junk.json").write_text("{not json")
    (tmp_path / "leases" / "README").write_text("x")
    made.claim(Lease("n1", "192.168.0.1", "10.244.0.0/24"))
    assert [le.node for le in made.leases()] == ["n1"]
    assert not [n for n in os.listdir(tmp_path / "leases") if n.endswith(".tmp")]
    made.close()


# ---------------------------------------------------------------- subnets


def test_node_subnets_split_the_cluster_cidr():
    assert list(node_subnets("10.244.0.0/22", 24)) == [
        "10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]
    with pytest.raises(SubnetError):
        list(node_subnets("10.244.0.0/24", 16))


# ---------------------------------------------------------------- routes


def test_desired_routes_skip_own_node():
    leases = [Lease("n1", "192.168.0.1", "10.244.0.0/24"),
              Lease("n2", "192.168.0.2", "10.244.1.0/24")]
    assert desired_routes(leases, "n1") == {"10.244.1.0/24": "192.168.0.2"}


def test_diff_deletes_first_then_adds_and_replaces():
    desired = {"10.244.1.0/24": "192.168.0.2", "10.244.2.0/24": "192.168.0.33"}
    current = {"10.244.2.0/24": "192.168.0.3", "10.244.9.0/24": "192.168.0.9"}
    assert diff(desired, current) == [
        Change("del", "10.244.9.0/24", "192.168.0.9"),
        Change("add", "10.244.1.0/24", "192.168.0.2"),
        Change("replace", "10.244.2.0/24", "192.168.0.33"),
    ]
    assert diff(desired, dict(desired)) == []


def test_route_refusal_messages():
    assert route_refusal("10.244.1.0/24", "192.168.0.2", "n2",
                         {"gateway": None, "dev": "eth0"}) is None
    off_link = route_refusal("10.244.1.0/24", "10.9.9.9", "n2",
                             {"gateway": "192.168.0.254", "dev": "eth0"})
    assert "not on-link" in off_link and "192.168.0.254" in off_link
    assert "one L2 segment" in off_link
    assert "unreachable" in route_refusal("10.244.1.0/24", "10.9.9.9", "n2", None)
    assert "same IP" in route_refusal("10.244.1.0/24", "192.168.0.1", "n2",
                                      {"gateway": None, "dev": "lo", "local": True})


# ---------------------------------------------------------------- the plugin path stays light


def test_the_plugin_path_never_imports_a_store_or_the_etcd_client():
    """What dcnet-python imports for ADD/DEL/CHECK/STATUS/GC (-I -S, as the launcher
    runs): the stores and the etcd client are the agent's business only."""
    root = str(Path(__file__).resolve().parents[2])
    code = (f"import sys; sys.path.insert(0, {root!r}); "
            "from dcnet.cni import plugin, skel, hostgw, macvlan; "
            "print(' '.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", "-c", code],
                          capture_output=True, text=True, check=True)
    modules = set(done.stdout.split())
    assert "dcnet.cni.hostgw" in modules and "dcnet.cni.hostgw" in done.stderr
    for heavy in ("dcnet.sysio.etcd", "dcnet.cni.etcdstore", "dcnet.cni.store",
                  "http.client", "ssl", "pyroute2"):
        assert heavy not in modules, heavy
        assert f" {heavy}\n" not in done.stderr, heavy


def test_store_sections_and_store_urls_are_checked_before_anything_connects():
    from dcnet.cli.agent import store_spec
    from dcnet.cni.store import open_store

    for spec, field in (({"type": "etcd"}, "store.url"),
                        ({"type": "etcd", "url": "http://10.0.0.1:2379"}, "store.url"),
                        ({"type": "etcd", "url": "etcd://10.0.0.1:2379", "leaseTTL": 1},
                         "store.leaseTTL"),
                        ({"type": "etcd", "url": "etcd://10.0.0.1:2379", "leaseTTL": "9"},
                         "store.leaseTTL"),
                        ({"type": "consul"}, "store.type")):
        with pytest.raises(ValueError, match=field):
            open_store(spec, "podnet")
    configured = {"type": "file", "path": "/var/lib/dcnet/store"}
    assert store_spec(configured, None, None) == configured
    assert store_spec(configured, "etcds://10.0.0.1:2379/dcnet", 9) == {
        "type": "etcd", "url": "etcds://10.0.0.1:2379/dcnet", "leaseTTL": 9}
    assert store_spec(configured, "file:///srv/leases", None) == {
        "type": "file", "path": "/srv/leases"}
    with pytest.raises(click.BadParameter):
        store_spec(configured, "/srv/leases", None)
    with pytest.raises(click.BadParameter):
        store_spec(configured, None, 9)  # a TTL for a file store
