"""The ``Store`` contract every subnet-lease store passes (file, in-memory fake, etcd).

A test module subclasses ``StoreContract`` and provides a ``store`` fixture yielding a
fresh, empty store; the class's tests then run against it (the unit tier for the file
store and the fake, the netns tier for etcd). ``wait`` calls that expect a change allow
seconds (they return as soon as it arrives); those that expect none wait briefly.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from dcnet.cni.store import Lease
from dcnet.cni.subnets import SubnetError, acquire

CHANGE_ARRIVES = 10.0  # upper bound for a change to be reported (etcd: via the watch)
NO_CHANGE = 0.05


class StoreContract:
    """Tests of the narrow Store interface; subclasses provide the ``store`` fixture."""

    def test_store_claim_is_exclusive(self, store):
        assert store.claim(Lease("n1", "192.168.0.1", "10.244.0.0/24"))
        assert not store.claim(Lease("n2", "192.168.0.2", "10.244.0.0/24"))
        assert store.leases() == [Lease("n1", "192.168.0.1", "10.244.0.0/24")]

    def test_store_update_and_release(self, store):
        store.claim(Lease("n1", "192.168.0.1", "10.244.0.0/24"))
        store.update(Lease("n1", "192.168.0.9", "10.244.0.0/24"))
        assert store.leases()[0].node_ip == "192.168.0.9"
        with pytest.raises(KeyError):
            store.update(Lease("n3", "192.168.0.3", "10.244.9.0/24"))
        assert store.release("10.244.0.0/24") and not store.release("10.244.0.0/24")
        assert store.leases() == []

    def test_store_hold_keeps_the_lease_unchanged(self, store):
        lease = Lease("n1", "192.168.0.1", "10.244.0.0/24")
        store.claim(lease)
        store.hold(lease)
        store.hold(lease)
        assert store.leases() == [lease]

    def test_store_leases_sorted_by_subnet(self, store):
        for subnet in ("10.244.2.0/24", "10.244.0.0/24", "10.244.1.0/24"):
            store.claim(Lease("n-" + subnet, "192.168.0.1", subnet))
        assert [le.subnet for le in store.leases()] == [
            "10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]

    def test_store_wait_reports_changes_and_times_out_without(self, store):
        assert not store.wait(NO_CHANGE)
        store.claim(Lease("n1", "192.168.0.1", "10.244.0.0/24"))
        assert store.wait(CHANGE_ARRIVES)
        assert not store.wait(NO_CHANGE)  # consumed
        store.release("10.244.0.0/24")
        assert store.wait(CHANGE_ARRIVES)

    def test_store_wait_wakes_on_a_change_from_another_thread(self, store):
        done = threading.Event()
        woke = []

        def waiter() -> None:
            woke.append(store.wait(30.0))
            done.set()

        thread = threading.Thread(target=waiter)
        thread.start()
        store.claim(Lease("n1", "192.168.0.1", "10.244.0.0/24"))
        assert done.wait(30.0)
        thread.join()
        assert woke == [True]

    def test_concurrent_claims_of_one_subnet_have_one_winner(self, store):
        with ThreadPoolExecutor(max_workers=8) as workers:
            wins = list(workers.map(
                lambda i: store.claim(Lease(f"n{i}", f"192.168.0.{i}", "10.244.0.0/24")),
                range(16)))
        assert wins.count(True) == 1 and len(store.leases()) == 1

    def test_acquire_keeps_claims_and_refreshes_ip(self, store):
        one = acquire(store, "10.244.0.0/23", 24, "n1", "192.168.0.1")
        two = acquire(store, "10.244.0.0/23", 24, "n2", "192.168.0.2")
        assert (one.subnet, two.subnet) == ("10.244.0.0/24", "10.244.1.0/24")
        again = acquire(store, "10.244.0.0/23", 24, "n1", "192.168.0.11")
        assert again.subnet == "10.244.0.0/24" and store.leases()[0].node_ip == "192.168.0.11"
        with pytest.raises(SubnetError):
            acquire(store, "10.244.0.0/23", 24, "n3", "192.168.0.3")

    def test_acquire_moves_on_when_another_node_wins_the_race(self, store):
        original_claim = store.claim

        def claim(lease: Lease) -> bool:
            if lease.subnet == "10.244.0.0/24":
                original_claim(Lease("rival", "192.168.0.99", lease.subnet))
            return original_claim(lease)

        store.claim = claim
        lease = acquire(store, "10.244.0.0/23", 24, "n1", "192.168.0.1")
        assert lease.subnet == "10.244.1.0/24"
