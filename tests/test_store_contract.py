"""The ``Store`` contract: one suite, parametrised over every subnet-lease store.

The ``store`` fixture yields a fresh, empty store of each implementation in turn: the
in-memory fake (``MemoryStore``) and the file store (``FileStore``) in the unit tier,
and ``EtcdStore`` on a real 3-member TLS etcd cluster (fixture ``etcd_cluster``) in the
netns tier, so the fake is held to exactly what the real stores do. ``wait`` calls that
expect a change allow seconds (they return as soon as it arrives); those that expect
none wait briefly.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from dcnet.cni.store import FileStore, Lease, MemoryStore
from dcnet.cni.subnets import SubnetError, acquire

CHANGE_ARRIVES = 10.0  # upper bound for a change to be reported (etcd: via the watch)
NO_CHANGE = 0.05

IMPLEMENTATIONS = [pytest.param("memory", marks=pytest.mark.unit),
                   pytest.param("file", marks=pytest.mark.unit),
                   pytest.param("etcd", marks=pytest.mark.netns)]


@pytest.fixture(params=IMPLEMENTATIONS)
def store(request, tmp_path):
    if request.param == "memory":
        made = MemoryStore()
    elif request.param == "file":
        made = FileStore(str(tmp_path / "store"))
    else:
        from tests.netns.test_cni_etcd import store_on

        made = store_on(request.getfixturevalue("etcd_cluster"), f"/t{uuid.uuid4().hex[:10]}")
    yield made
    made.close()


def test_store_claim_is_exclusive(store):
    assert store.claim(Lease("n1", "192.168.0.1", "10.244.0.0/24"))
    assert not store.claim(Lease("n2", "192.168.0.2", "10.244.0.0/24"))
    assert store.leases() == [Lease("n1", "192.168.0.1", "10.244.0.0/24")]


def test_store_update_and_release(store):
    store.claim(Lease("n1", "192.168.0.1", "10.244.0.0/24"))
    store.update(Lease("n1", "192.168.0.9", "10.244.0.0/24"))
    assert store.leases()[0].node_ip == "192.168.0.9"
    with pytest.raises(KeyError):
        store.update(Lease("n3", "192.168.0.3", "10.244.9.0/24"))
    assert store.release("10.244.0.0/24") and not store.release("10.244.0.0/24")
    assert store.leases() == []


def test_store_hold_keeps_the_lease_unchanged(store):
    lease = Lease("n1", "192.168.0.1", "10.244.0.0/24")
    store.claim(lease)
    store.hold(lease)
    store.hold(lease)
    assert store.leases() == [lease]


def test_store_leases_sorted_by_subnet(store):
    for subnet in ("10.244.2.0/24", "10.244.0.0/24", "10.244.1.0/24"):
        store.claim(Lease("n-" + subnet, "192.168.0.1", subnet))
    assert [le.subnet for le in store.leases()] == [
        "10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]


def test_store_wait_reports_changes_and_times_out_without(store):
    assert not store.wait(NO_CHANGE)
    store.claim(Lease("n1", "192.168.0.1", "10.244.0.0/24"))
    assert store.wait(CHANGE_ARRIVES)
    assert not store.wait(NO_CHANGE)  # consumed
    store.release("10.244.0.0/24")
    assert store.wait(CHANGE_ARRIVES)


def test_store_wait_wakes_on_a_change_from_another_thread(store):
    done = threading.Event()
    woke = []

    def waiter() -> None:
        woke.append(store.wait(30.0))
        done.set()

    thread = threading.Thread(daemon=True, target=waiter)
    thread.start()
    store.claim(Lease("n1", "192.168.0.1", "10.244.0.0/24"))
    assert done.wait(30.0)
    thread.join()
    assert woke == [True]


def test_concurrent_claims_of_one_subnet_have_one_winner(store):
    with ThreadPoolExecutor(max_workers=8) as workers:
        wins = list(workers.map(
            lambda i: store.claim(Lease(f"n{i}", f"192.168.0.{i}", "10.244.0.0/24")),
            range(16)))
    assert wins.count(True) == 1 and len(store.leases()) == 1


def test_acquire_keeps_claims_and_refreshes_ip(store):
    one = acquire(store, "10.244.0.0/23", 24, "n1", "192.168.0.1")
    two = acquire(store, "10.244.0.0/23", 24, "n2", "192.168.0.2")
    assert (one.subnet, two.subnet) == ("10.244.0.0/24", "10.244.1.0/24")
    again = acquire(store, "10.244.0.0/23", 24, "n1", "192.168.0.11")
    assert again.subnet == "10.244.0.0/24" and store.leases()[0].node_ip == "192.168.0.11"
    with pytest.raises(SubnetError):
        acquire(store, "10.244.0.0/23", 24, "n3", "192.168.0.3")


def test_acquire_moves_on_when_another_node_wins_the_race(store):
    original_claim = store.claim

    def claim(lease: Lease) -> bool:
        if lease.subnet == "10.244.0.0/24":
            original_claim(Lease("rival", "192.168.0.99", lease.subnet))
        return original_claim(lease)

    store.claim = claim
    lease = acquire(store, "10.244.0.0/23", 24, "n1", "192.168.0.1")
    assert lease.subnet == "10.244.1.0/24"


def test_store_holds_both_families_of_a_dual_stack_node(store):
    """IPv6 subnets (colons in the file name or etcd key) live beside IPv4 ones."""
    v4 = acquire(store, "10.244.0.0/16", 24, "n1", "192.168.0.1")
    v6 = acquire(store, "fd00:10::/48", 64, "n1", "fd00:100::1")
    assert v6 == Lease("n1", "fd00:100::1", "fd00:10::/64")
    assert acquire(store, "fd00:10::/48", 64, "n2", "fd00:100::2").subnet == "fd00:10:0:1::/64"
    store.update(Lease("n1", "fd00:100::9", "fd00:10::/64"))
    assert sorted(le.subnet for le in store.leases()) == sorted(
        [v4.subnet, "fd00:10::/64", "fd00:10:0:1::/64"])
    assert acquire(store, "fd00:10::/48", 64, "n1", "fd00:100::9").subnet == "fd00:10::/64"
    assert store.release("fd00:10::/64") and not store.release("fd00:10::/64")
    assert [le.subnet for le in store.leases() if le.node == "n1"] == [v4.subnet]
