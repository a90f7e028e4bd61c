"""The contract of the etcd client interface (dcnet.sysio.etcd.Client's methods), one suite
run against a real 3-member TLS etcd cluster in a lab (fixture ``etcd_cluster``) and
parametrised over every implementation the code base uses in its place: ``Client``
itself and the ELB agents' ``CountingClient`` wrapper (dcnet.elbstore.store). There is no
in-memory fake of the client; a fake would join ``IMPLEMENTATIONS`` and pass the same
tests. Covered: keys, transactions under concurrency, leases, watches with resume and
compaction, auth and failover between members; TLS settings and a plain cluster are
tested on ``Client`` alone (they are its construction, which wrappers do not change)."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from dcnet.elbstore.store import CountingClient
from dcnet.lab.etcd_lab import EtcdCluster, _Pki, etcd_hosts_topology, start_etcd_cluster
from dcnet.sysio import netns as netns_mod
from dcnet.sysio.etcd import (
    Client,
    EtcdCompacted,
    EtcdError,
    EtcdPermissionDenied,
    EtcdUnavailable,
    Event,
    parse_url,
)

pytestmark = pytest.mark.netns

IMPLEMENTATIONS = {"Client": lambda client: client, "CountingClient": CountingClient}


class _Implementation:
    """The lab cluster, handing out clients of one implementation of the interface."""

    def __init__(self, cluster: EtcdCluster, wrap):
        self._cluster, self._wrap = cluster, wrap

    def client(self, **kwargs):
        return self._wrap(self._cluster.client(**kwargs))

    def __getattr__(self, name: str):
        return getattr(self._cluster, name)


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def cluster(request, etcd_cluster) -> _Implementation:
    """``etcd_cluster`` whose ``client()`` makes the implementation under test."""
    return _Implementation(etcd_cluster, IMPLEMENTATIONS[request.param])


def _follower(cluster) -> str:
    """A running member that is not the leader."""
    for member in cluster.members:
        probe = cluster.client(endpoints=[cluster.member_endpoint(member)], prefix="")
        status = probe.status()
        if cluster.is_running(member) and status["leader"] != status["member_id"]:
            return member
    raise AssertionError("no follower found")


def _member_at(cluster, endpoint: str) -> str:
    return cluster.members[cluster.endpoints.index(endpoint)]


def _client_on(cluster, member: str, **kwargs):
    """A client whose first-choice endpoint is ``member`` (the others follow)."""
    first = cluster.member_endpoint(member)
    return cluster.client(endpoints=[first, *(e for e in cluster.endpoints if e != first)],
                          **kwargs)


def _wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


# ---------------------------------------------------------------- keys


def test_get_put_delete_and_prefixes(cluster):
    client = cluster.client(prefix="/dcnet")
    other = cluster.client(prefix="/other")
    assert client.get("/nodes/a") is None
    first = client.put("/nodes/a", "10.1.0.0/24")
    second = client.put("/nodes/b", b"\x00\xffbinary")
    other.put("/nodes/zzz", "not mine")
    assert second > first > 0
    kv = client.get("/nodes/a")
    assert (kv.key, kv.value, kv.version, kv.lease) == ("/nodes/a", b"10.1.0.0/24", 1, 0)
    assert kv.create_revision == kv.mod_revision == first
    kvs, revision = client.get_prefix("/nodes/")
    assert [(k.key, k.value) for k in kvs] == [("/nodes/a", b"10.1.0.0/24"),
                                               ("/nodes/b", b"\x00\xffbinary")]
    assert revision >= second + 1
    client.put("/nodes/a", "changed")
    kv = client.get("/nodes/a")
    assert (kv.value, kv.version, kv.create_revision) == (b"changed", 2, first)
    root = cluster.client(prefix="")
    assert root.get("/dcnet/nodes/a").value == b"changed"
    assert root.get("/other/nodes/zzz").value == b"not mine"
    assert client.delete("/nodes/a") is True
    assert client.delete("/nodes/a") is False
    client.put("/nodes/c", "c")
    assert client.delete_prefix("/nodes/") == 2
    assert client.get_prefix("/nodes/")[0] == []
    assert other.get("/nodes/zzz").value == b"not mine"


def test_create_race_has_exactly_one_winner(cluster):
    contenders = 12
    clients = [_client_on(cluster, cluster.members[i % 3]) for i in range(contenders)]
    barrier = threading.Barrier(contenders)
    results: dict[int, bool | Exception] = {}

    def contend(index: int) -> None:
        barrier.wait()
        try:
            results[index] = clients[index].create("/lock", f"owner-{index}")
        except Exception as exc:  # reported below
            results[index] = exc

    threads = [threading.Thread(daemon=True, target=contend, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(r, bool) for r in results.values()), results
    winners = [i for i, won in results.items() if won]
    assert len(winners) == 1
    assert clients[0].get("/lock").value == f"owner-{winners[0]}".encode()
    assert clients[0].get("/lock").version == 1


def test_replace_is_compare_and_swap_without_lost_updates(cluster):
    writers, increments = 4, 10
    clients = [_client_on(cluster, cluster.members[i % 3]) for i in range(writers)]
    clients[0].put("/counter", "0")
    conflicts = [0] * writers

    def increment(index: int) -> None:
        client = clients[index]
        for _ in range(increments):
            while True:
                kv = client.get("/counter")
                if client.replace("/counter", str(int(kv.value) + 1), kv.mod_revision):
                    break
                conflicts[index] += 1

    threads = [threading.Thread(daemon=True, target=increment, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clients[0].get("/counter").value == str(writers * increments).encode()
    # replace with a stale revision fails; 0 means "must not exist"
    kv = clients[0].get("/counter")
    assert clients[0].replace("/counter", "x", kv.mod_revision - 1) is False
    assert clients[0].replace("/counter", "x", 0) is False
    assert clients[0].replace("/fresh", "new", 0) is True
    assert clients[0].delete_if("/counter", kv.mod_revision - 1) is False
    assert clients[0].delete_if("/counter", kv.mod_revision) is True
    assert clients[0].get("/counter") is None


def test_raw_txn_uses_plain_keys_and_values(cluster):
    client = cluster.client()
    client.put("/a", "1")
    ok, responses, revision = client.txn(
        [{"key": "/a", "target": "VALUE", "result": "EQUAL", "value": "1"}],
        [{"request_put": {"key": "/b", "value": "2"}}, {"request_range": {"key": "/a"}}],
        [])
    assert ok is True
    assert responses[1]["response_range"]["kvs"][0]["key"] == "/a"
    assert responses[1]["response_range"]["kvs"][0]["value"] == b"1"
    assert client.get("/b").mod_revision == revision
    ok, responses, _ = client.txn(
        [{"key": "/a", "target": "VALUE", "result": "EQUAL", "value": "nope"}],
        [{"request_put": {"key": "/c", "value": "never"}}],
        [{"request_range": {"key": "/b"}}])
    assert ok is False
    assert responses[0]["response_range"]["kvs"][0]["value"] == b"2"
    assert client.get("/c") is None


# ---------------------------------------------------------------- leases


def test_lease_expires_without_keepalive(cluster):
    client = cluster.client()
    lease = client.lease_grant(2)
    client.put("/nodes/n1", "10.1.0.0/24", lease=lease)
    assert client.get("/nodes/n1").lease == lease
    _wait_until(lambda: client.get("/nodes/n1") is None, 15, "leased key gone after TTL")
    assert client.lease_keepalive(lease) == 0


def test_lease_kept_alive_stays_and_revoke_deletes(cluster):
    client = cluster.client()
    lease = client.lease_grant(2)
    assert client.create("/nodes/n1", "10.1.0.0/24", lease=lease) is True
    end = time.monotonic() + 5  # 2.5 TTLs
    while time.monotonic() < end:
        assert client.lease_keepalive(lease) >= 1
        time.sleep(0.4)
    assert client.get("/nodes/n1") is not None
    client.lease_revoke(lease)
    assert client.get("/nodes/n1") is None
    assert client.lease_keepalive(lease) == 0
    client.lease_revoke(lease)  # already gone: fine


# ---------------------------------------------------------------- watch


def _collect(client: Client, prefix: str, start: int, stop: threading.Event,
             into: list, errors: list) -> threading.Thread:
    def run() -> None:
        try:
            for revision, events in client.watch_prefix(prefix, start, stop):
                into.append((revision, events))
        except Exception as exc:  # handed to the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_watch_yields_revisions_in_order_and_stops(cluster):
    client = cluster.client()
    start = client.put("/elsewhere", "x") + 1
    stop = threading.Event()
    seen: list[tuple[int, list[Event]]] = []
    errors: list[Exception] = []
    thread = _collect(client, "/svc/", start, stop, seen, errors)
    r1 = client.put("/svc/a", "1")
    r2 = client.put("/svc/b", "2")
    client.put("/elsewhere", "y")
    assert client.delete("/svc/a") is True
    r3 = client.get_prefix("/svc/")[1]  # the delete was the last write
    _, _, r4 = client.txn([], [{"request_put": {"key": "/svc/c", "value": "3"}},
                               {"request_put": {"key": "/svc/d", "value": "4"}}], [])
    _wait_until(lambda: sum(len(e) for _, e in seen) >= 5, 10, "5 events seen")
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive(), "watch did not return after stop was set"
    assert errors == []
    assert [rev for rev, _ in seen] == [r1, r2, r3, r4]
    flat = [(rev, e.kind, e.kv.key, e.kv.value) for rev, events in seen for e in events]
    assert flat == [(r1, "put", "/svc/a", b"1"), (r2, "put", "/svc/b", b"2"),
                    (r3, "delete", "/svc/a", b""), (r4, "put", "/svc/c", b"3"),
                    (r4, "put", "/svc/d", b"4")]
    assert all(e.kv.mod_revision == rev for rev, events in seen for e in events)


def test_watch_resumes_after_disconnect_without_missing_anything(cluster):
    watched_member = _follower(cluster)
    watcher = _client_on(cluster, watched_member)
    writer = _client_on(cluster, next(m for m in cluster.members
                                           if m != watched_member))
    start = writer.put("/svc/0", "0")
    stop = threading.Event()
    seen: list[tuple[int, list[Event]]] = []
    errors: list[Exception] = []
    thread = _collect(watcher, "/svc/", start, stop, seen, errors)
    _wait_until(lambda: len(seen) >= 1, 10, "first event seen")
    assert watcher.status()["endpoint"] == cluster.member_endpoint(watched_member)
    cluster.kill(watched_member)
    thread.join(timeout=15)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], EtcdUnavailable), errors
    written = [writer.put(f"/svc/{i}", str(i)) for i in range(1, 6)]  # while it is away
    resumed = seen[-1][0] + 1
    thread = _collect(watcher, "/svc/", resumed, stop, seen, errors)
    written.append(writer.put("/svc/6", "6"))
    _wait_until(lambda: seen[-1][0] == written[-1], 15, "all writes seen after resume")
    stop.set()
    thread.join(timeout=10)
    assert len(errors) == 1
    assert [rev for rev, _ in seen] == [start, *written]
    assert [e.kv.key for _, events in seen for e in events] == [f"/svc/{i}" for i in range(7)]


def test_watch_from_compacted_revision_raises_compacted(cluster):
    client = cluster.client()
    old = client.put("/svc/a", "1")
    latest = client.put("/svc/a", "2")
    client.compact(latest)
    with pytest.raises(EtcdCompacted) as caught:
        next(client.watch_prefix("/svc/", old))
    assert caught.value.compact_revision == latest
    # a start at the compaction revision itself is still served
    revision, events = next(client.watch_prefix("/svc/", latest))
    assert (revision, events[0].kv.value) == (latest, b"2")


# ---------------------------------------------------------------- TLS


def test_plain_http_and_wrong_ca_and_no_client_cert_are_refused(etcd_cluster, tmp_path):
    good = etcd_cluster.client()
    good.put("/x", "1")
    base = good.settings
    plain = dataclasses.replace(base, endpoints=tuple(
        e.replace("https://", "http://") for e in base.endpoints), ca=None, cert=None, key=None)
    with pytest.raises(EtcdUnavailable, match="closed connection"):  # TLS port: plain HTTP dropped
        Client(plain, netns=good.netns).get("/x")
    other_ca = _Pki(str(tmp_path / "other-ca")).ca
    with pytest.raises(EtcdError, match="TLS verification of the server failed"):
        Client(dataclasses.replace(base, ca=other_ca), netns=good.netns).get("/x")
    with pytest.raises(EtcdError):
        Client(dataclasses.replace(base, cert=None, key=None), netns=good.netns).get("/x")
    assert good.get("/x").value == b"1"


# ---------------------------------------------------------------- auth


def test_user_with_role_on_prefix_is_confined_to_it(cluster, monkeypatch):
    cluster.client(prefix="/dcnet").put("/svc/b/old", "kept")
    cluster.enable_auth("root-secret")
    admin = cluster.client(prefix="/dcnet")  # root, after enable_auth
    admin.role_add("svc-a")
    admin.role_grant_prefix("svc-a", "/svc/a/", "readwrite")
    admin.user_add("svc-a", "a-secret")
    admin.user_grant_role("svc-a", "svc-a")
    service = cluster.client(user="svc-a", password="a-secret", prefix="/dcnet")
    assert service.put("/svc/a/backend1", "10.0.0.1") > 0
    assert service.get("/svc/a/backend1").value == b"10.0.0.1"
    assert service.create("/svc/a/backend2", "10.0.0.2") is True
    with pytest.raises(EtcdPermissionDenied):
        service.put("/svc/b/backend1", "10.0.0.9")
    with pytest.raises(EtcdPermissionDenied):
        service.get("/svc/b/old")
    with pytest.raises(EtcdPermissionDenied):
        service.delete("/svc/b/old")
    with pytest.raises(EtcdPermissionDenied):
        next(service.watch_prefix("/svc/b/", 0))
    with pytest.raises(EtcdPermissionDenied):
        service.user_add("intruder", "x")
    wrong = cluster.client(user="svc-a", password="wrong", prefix="/dcnet")
    with pytest.raises(EtcdPermissionDenied, match="authentication failed"):
        wrong.get("/svc/a/backend1")
    assert admin.get("/svc/b/old").value == b"kept"
    # etcd forgets a simple token unused for --auth-token-ttl seconds (a restart alone
    # may not: it replays recent logins from its log, bench/etcd_clients.py saw an old
    # token still accepted): members restarted with a 1 s TTL, both clients left idle
    monkeypatch.setenv("ETCD_AUTH_TOKEN_TTL", "1")  # etcd reads its flags from ETCD_*
    cluster.stop_all()
    cluster.start_all()
    cluster.wait_healthy()
    watcher = cluster.client(user="svc-a", password="a-secret", prefix="/dcnet")
    revision = watcher.get_prefix("/svc/a/")[1]  # logs in
    old_tokens = (service._token, watcher._token)
    time.sleep(4)  # idle past the TTL
    assert service.get("/svc/a/backend1").value == b"10.0.0.1"
    # a watch with the dead token logs in again too (the stream refuses it, not the call)
    service.put("/svc/a/backend3", "10.0.0.3")
    seen = next(watcher.watch_prefix("/svc/a/", revision + 1))
    assert [e.kv.key for e in seen[1]] == ["/svc/a/backend3"]
    assert None not in old_tokens
    assert service._token != old_tokens[0] and watcher._token != old_tokens[1]


# ---------------------------------------------------------------- failover


def test_killing_the_member_in_use_fails_over_to_another(cluster):
    used = _follower(cluster)
    client = _client_on(cluster, used)
    client.put("/a", "1")
    assert client.status()["endpoint"] == cluster.member_endpoint(used)
    cluster.kill(used)
    assert client.put("/a", "2") > 0
    assert client.get("/a").value == b"2"
    assert _member_at(cluster, client.status()["endpoint"]) != used


def test_no_member_reachable_raises_unavailable(cluster):
    client = cluster.client(timeout=2.0)
    client.put("/a", "1")
    for member in cluster.members:
        cluster.kill(member)
    with pytest.raises(EtcdUnavailable) as caught:
        client.get("/a")
    for endpoint in cluster.endpoints:
        assert endpoint in str(caught.value)
    with pytest.raises(EtcdUnavailable):
        next(client.watch_prefix("/", 0))
    cluster.start_all()
    cluster.wait_healthy()
    assert client.get("/a").value == b"1"


def test_plain_cluster_without_tls(lab_factory, tmp_path):
    lab = lab_factory(etcd_hosts_topology(subnet="10.98.0.0/24"))
    cluster = start_etcd_cluster(lab, ["etcd1", "etcd2", "etcd3"], str(tmp_path / "etcd"),
                                 tls=False, client_host="etcdsw")
    try:
        cluster.wait_healthy()
        assert cluster.ca is None and cluster.root_cert is None
        assert cluster.url(prefix="/x").startswith("etcd://10.98.0.1:2379,")
        client = Client(parse_url(cluster.url(prefix="/x")),
                        netns=netns_mod.path_of(lab.netns("etcdsw")))
        client.put("/k", "v")
        assert cluster.client(prefix="").get("/x/k").value == b"v"
        client.close()
    finally:
        cluster.close()
