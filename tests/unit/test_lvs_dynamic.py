"""``elbctl backend add|remove|drain`` over the fake IPVS: checks before any change, the
durable registry, drain on remove, and many concurrent calls during full applies (the
lvs target's lock: the same file) losing none (threads each holding their own flock file
description)."""

from __future__ import annotations

import threading

import pytest

from dcnet.lab import lvs_lab as lvslab
from dcnet.lvs.dynamic import BackendCommandError, change_backend
from dcnet.lvs.fake import FakeIPVS
from dcnet.lvs.ipvs import WireService
from dcnet.lvs.store import Store
from dcnet.target import apply_plan, make_plan
from tests.unit.test_lvs_contract import observed
from tests.unit.test_lvs_plan import target

pytestmark = pytest.mark.unit

NOW = 1_000_000.0
NAT_KEY = ("tcp", lvslab.VIPS["telecom"][0], 80)


@pytest.fixture
def applied(tmp_path):
    store = Store(str(tmp_path))
    ipvs = FakeIPVS()
    backend = target(ipvs, store.directory)
    assert apply_plan(backend, backend.plan(lvslab.model())).ok
    return store, ipvs


def dests(ipvs, skey=NAT_KEY):
    return observed(ipvs)[skey][1]


def test_add_records_then_programs_only_that_service(applied):
    store, ipvs = applied
    before = ipvs.writes
    result = change_backend(store, ipvs, "add", lvslab.JOB_NAT, "10.20.0.50", weight=7)
    assert not result.errors and ipvs.writes - before == 2      # one dest per carrier VIP
    assert dests(ipvs)[(*NAT_KEY, "10.20.0.50", 8080)] == {"forward": "nat", "weight": 7}
    assert store.registry()[lvslab.JOB_NAT]["10.20.0.50"] == {"weight": 7, "state": "active"}
    assert "writes: 2 netlink" in result.to_text()


def test_a_full_apply_keeps_registered_backends(applied):
    store, ipvs = applied
    change_backend(store, ipvs, "add", lvslab.JOB_NAT, "10.20.0.50")
    backend = target(ipvs, store.directory)
    assert backend.plan(lvslab.model()).empty


def test_drain_keeps_the_server_at_weight_zero(applied):
    store, ipvs = applied
    change_backend(store, ipvs, "drain", lvslab.JOB_NAT, "10.20.0.12")
    assert dests(ipvs)[(*NAT_KEY, "10.20.0.12", 8080)]["weight"] == 0
    backend = target(ipvs, store.directory)
    assert backend.plan(lvslab.model()).empty
    change_backend(store, ipvs, "add", lvslab.JOB_NAT, "10.20.0.12")
    assert dests(ipvs)[(*NAT_KEY, "10.20.0.12", 8080)]["weight"] == 2


def test_remove_drains_a_busy_server_and_deletes_an_idle_one(applied):
    store, ipvs = applied
    ipvs.set_conns(WireService(2, 6, NAT_KEY[1], 80), "10.20.0.11", 8080, 5)
    result = change_backend(store, ipvs, "remove", lvslab.JOB_NAT, "10.20.0.11",
                            clock=lambda: NOW)
    assert dests(ipvs)[(*NAT_KEY, "10.20.0.11", 8080)]["weight"] == 0
    assert any("draining" in n for n in result.notes)
    assert (*NAT_KEY, "10.20.0.11", 8080) in store.drain_set()
    unicom = ("tcp", lvslab.VIPS["unicom"][0], 80)
    assert (*unicom, "10.20.0.11", 8080) not in dests(ipvs, unicom)     # idle: deleted


@pytest.mark.parametrize("server, weight, message", [
    ("10.20.0.50:9090", None, None),
    ("nohost", None, "is not an IP address"),
    ("2001:db8::1", None, "address family"),
    ("10.20.0.50", 70000, "weight must be"),
])
def test_bad_requests_change_nothing(applied, server, weight, message):
    store, ipvs = applied
    if message is None:                               # NAT may map the port: accepted
        assert not change_backend(store, ipvs, "add", lvslab.JOB_NAT, server).errors
        return
    before = (ipvs.writes, store.registry())
    with pytest.raises(BackendCommandError, match=message):
        change_backend(store, ipvs, "add", lvslab.JOB_NAT, server, weight)
    assert (ipvs.writes, store.registry()) == before


def test_dr_cannot_change_the_port_and_unknown_services_are_refused(applied):
    store, ipvs = applied
    with pytest.raises(BackendCommandError, match="cannot change the port"):
        change_backend(store, ipvs, "add", lvslab.JOB_DR, "10.20.0.50:9")
    with pytest.raises(BackendCommandError, match="unknown service"):
        change_backend(store, ipvs, "add", "job.nope", "10.20.0.50")


def test_without_an_applied_model_nothing_happens(tmp_path):
    with pytest.raises(BackendCommandError, match="run 'elbctl apply"):
        change_backend(Store(str(tmp_path)), FakeIPVS(), "add", lvslab.JOB_NAT, "10.0.0.1")


def test_hundreds_of_concurrent_calls_during_full_applies_lose_none(applied):
    store, ipvs = applied
    addresses = [f"10.30.{i // 200}.{i % 200 + 1}" for i in range(300)]
    errors: list = []
    lock = threading.Lock()        # the fake itself is not thread-safe; the flock is tested

    class Serialized(FakeIPVS):
        def execute(self, requests):
            with lock:
                return ipvs.execute(requests)

        def dests(self, service):
            with lock:
                return ipvs.dests(service)

        def services(self):
            with lock:
                return ipvs.services()

    def add(address):
        try:
            change_backend(Store(store.directory), Serialized(), "add", lvslab.JOB_NAT, address)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    def full_apply():
        backend = target(Serialized(), store.directory)
        with backend.lock(None):
            result = apply_plan(backend, make_plan(backend, lvslab.model()))
        if not result.ok:
            errors.append(result.error)

    threads = [threading.Thread(daemon=True, target=add, args=(a,)) for a in addresses]
    threads += [threading.Thread(daemon=True, target=full_apply) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert set(addresses) <= set(store.registry()[lvslab.JOB_NAT])
    got = dests(ipvs)
    assert all((*NAT_KEY, a, 8080) in got for a in addresses)


def test_a_dual_stack_service_takes_servers_of_either_family(tmp_path):
    """Each VIP is paired with servers of its own family: an IPv6 server added to a
    dual-stack service lands on the IPv6 VIPs only (it was refused when the family was
    taken from the first VIP)."""
    store, ipvs = Store(str(tmp_path)), FakeIPVS()
    backend = target(ipvs, store.directory)
    assert apply_plan(backend, backend.plan(lvslab.model(ipv6=True))).ok
    result = change_backend(store, ipvs, "add", lvslab.JOB_NAT, "fd00:20::50")
    assert not result.errors, result.to_text()
    six = ("tcp", lvslab.VIPS6["telecom"][0], 80)
    assert any(k[3] == "fd00:20::50" for k in dests(ipvs, six))
    assert not any(k[3] == "fd00:20::50" for k in dests(ipvs, NAT_KEY))
