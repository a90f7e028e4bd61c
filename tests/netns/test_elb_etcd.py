"""The ELB on etcd against a real three-member etcd cluster (TLS, authentication on) and
real HAProxy directors in lab namespaces: two agents converge on a pushed model, a backend
registered from a third machine appears on both, a rollback converges both, an etcd
outage changes nothing and both converge when it returns; one service's credentials
cannot touch another service's backends, directors cannot push; concurrent registrations
lose nothing; an agent whose resume revision was compacted resyncs."""

from __future__ import annotations

import concurrent.futures
import shutil
import sys
import tempfile
import threading

import pytest

from dcnet.elbstore.agent import Agent
from dcnet.elbstore.keys import Keys
from dcnet.elbstore.records import Status
from dcnet.elbstore.store import ElbStore
from dcnet.lab import elbstore_lab as elab
from dcnet.lab import haproxy_lab as hlab
from dcnet.sysio.etcd import EtcdPermissionDenied, Settings
from dcnet.target import registry

pytestmark = pytest.mark.netns

RS1, RS2, RS3 = (elab.server_address(i) for i in (1, 2, 3))
BACKEND = f"{elab.JOB}:{elab.SERVICE_PORT}"
JOB2 = hlab.job_name(1)
KEYS = Keys()


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix="dcnet-elb-etcd-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def statuses(elb: elab.ElbLab) -> dict[str, Status]:
    store = ElbStore(elb.cluster.client(prefix=elab.PREFIX), KEYS)
    return {s.director: s for s in store.statuses()}


def converged(elb, model_revision, servers, min_revision=0):
    """Both directors report ``model_revision`` applied (ok, at or after ``min_revision``)
    and HAProxy runs exactly ``servers`` ({ADDR:PORT: attrs}) in the first service."""
    def check():
        seen = statuses(elb)
        for name in elb.directors:
            s = seen.get(name)
            if s is None or s.result != "ok" or s.model_revision != model_revision or \
                    s.revision < min_revision:
                return False
            if elb.runtime(name).get(BACKEND, {}) != servers:
                return False
        return seen
    return check


def ready(weight):
    return {"state": "ready", "weight": weight}


def test_two_directors_follow_push_registration_rollback_and_an_outage(lab_factory, workdir):
    elb = elab.ElbLab.create(lab_factory, workdir, directors=2, servers=3)
    elb.setup_auth()
    v1 = elab.model_data({RS1: 10})
    assert elb.push(v1) == 1
    for name in elb.directors:
        elb.start_director(name, v1, user=name)
    rs1 = f"{RS1}:{elab.SERVER_PORT}"
    elb.wait(converged(elb, 1, {rs1: ready(10)}), what="both directors on revision 1")

    # a backend registered from a third machine with the service's own credentials
    done = elb.elbctl(elab.REGISTRAR, "backend", "add", elab.JOB, RS2, "--weight", "5",
                      user="svc")
    revision = int(done.stdout.split("etcd revision ")[1].split(")")[0])
    rs2 = f"{RS2}:{elab.SERVER_PORT}"
    elb.wait(converged(elb, 1, {rs1: ready(10), rs2: ready(5)}, revision),
             what="the registered backend on both directors")
    assert all(elb.serves(name) for name in elb.directors)

    # a new model: rs1 re-weighted, rs3 added; then a rollback to revision 1
    assert elb.push(elab.model_data({RS1: 20, RS3: 1})) == 2
    rs3 = f"{RS3}:{elab.SERVER_PORT}"
    elb.wait(converged(elb, 2, {rs1: ready(20), rs2: ready(5), rs3: ready(1)}),
             what="both directors on revision 2")
    elb.elbctl(elab.SWITCH, "rollback", "1", user="admin")
    seen = elb.wait(converged(elb, 3, {rs1: ready(10), rs2: ready(5)}),
                    what="both directors on revision 3 (= 1)")
    assert all(s.errors == [] for s in seen.values())
    history = elb.elbctl(elab.SWITCH, "history", user="admin").stdout.splitlines()
    assert [(line[0], line[1:].split()[0]) for line in history] == \
        [(" ", "1"), (" ", "2"), ("*", "3")]
    assert "rollback of 1" in history[2]

    # etcd down: HAProxy keeps serving what it has; back up: a change converges again
    elb.cluster.stop_all()
    assert all(elb.serves(name) for name in elb.directors)
    assert all(elb.runtime(name)[BACKEND] == {rs1: ready(10), rs2: ready(5)}
               for name in elb.directors)
    elb.cluster.start_all()
    elb.cluster.wait_healthy(60.0)
    done = elb.elbctl(elab.REGISTRAR, "backend", "drain", elab.JOB, RS2, user="svc")
    revision = int(done.stdout.split("etcd revision ")[1].split(")")[0])
    elb.wait(converged(elb, 3, {rs1: ready(10), rs2: {"state": "drain"}}, revision),
             timeout=90.0, what="both directors after the etcd outage")
    out = elb.elbctl(elab.SWITCH, "status", user="admin").stdout
    assert "current model revision: 3" in out and out.count(" ok ") == 2


def test_credentials_are_limited_to_their_service_and_role(lab_factory, workdir):
    elb = elab.ElbLab.create(lab_factory, workdir, directors=2, servers=0)
    elb.setup_auth(services=(elab.JOB, JOB2))
    assert elb.push(elab.model_data({RS1: 1}, services=2)) == 1
    # the service's user registers its own backends ...
    elb.elbctl(elab.REGISTRAR, "backend", "add", elab.JOB, RS2, user="svc")
    # ... and cannot touch another service's
    refused = elb.elbctl(elab.REGISTRAR, "backend", "add", JOB2, RS2, user="svc", check=False)
    assert refused.returncode == 4
    assert refused.stderr.startswith("elbctl: backend add: permission denied by etcd")
    refused = elb.elbctl(elab.REGISTRAR, "backend", "remove", JOB2, RS1, user="svc",
                         check=False)
    assert refused.returncode == 4
    # a director cannot push, roll back or register
    for args in (("push", "-f", elb.write_model(elab.model_data({RS1: 2}))),
                 ("rollback", "1"), ("backend", "add", elab.JOB, RS3)):
        refused = elb.elbctl(elab.SWITCH, *args, user="dir1", check=False)
        assert refused.returncode == 4, args
        assert "permission denied by etcd" in refused.stderr
    # the service's user cannot push either
    refused = elb.elbctl(elab.SWITCH, "push", "-f", elb.write_model(elab.model_data({})),
                         user="svc", check=False)
    assert refused.returncode == 4
    # a director writes its own status, not another's
    password = elb.passwords["dir1"]
    store = ElbStore(elb.cluster.client(user="dir1", password=password, prefix=elab.PREFIX),
                     KEYS)
    store.write_status(Status("dir1", "haproxy", "ok"))
    with pytest.raises(EtcdPermissionDenied):
        store.write_status(Status("dir2", "haproxy", "ok"))
    # without credentials nothing is readable; a wrong password is refused
    refused = elb.elbctl(elab.SWITCH, "history", check=False)
    assert refused.returncode == 4
    # what was refused left nothing behind
    admin = ElbStore(elb.cluster.client(prefix=elab.PREFIX), KEYS)
    assert admin.registry() == {elab.JOB: {RS2: {"weight": 1, "state": "active"}}}
    assert admin.history()[1] == 1


def test_concurrent_registrations_lose_nothing(lab_factory, workdir):
    elb = elab.ElbLab.create(lab_factory, workdir, directors=0, servers=0)
    assert elb.push(elab.model_data({RS1: 1}), user=None) == 1
    distinct = [f"10.98.{i // 200}.{i % 200 + 1}" for i in range(32)]
    same = 16
    jobs = [("add", server, None) for server in distinct]
    jobs += [("add", RS1, str(weight)) for weight in range(2, 2 + same)]

    def run(job):
        action, server, weight = job
        extra = ("--weight", weight) if weight else ()
        return elb.elbctl(elab.REGISTRAR, "backend", action, elab.JOB, server, *extra,
                          timeout=300.0)

    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(run, jobs))
    assert all(r.returncode == 0 for r in results)
    store = ElbStore(elb.cluster.client(prefix=elab.PREFIX), KEYS)
    registry = store.registry()[elab.JOB]
    assert sorted(registry) == sorted([*distinct, RS1])
    # every one of the updates of the same key was applied on top of the previous one
    kv = store.client.get(KEYS.backend(elab.JOB, RS1))
    assert kv.version == same
    assert registry[RS1]["weight"] in range(2, 2 + same)


def test_agent_resyncs_when_its_resume_revision_was_compacted(lab_factory, workdir):
    """An agent (in this process, applying to an in-memory target) talks to one member
    only; while that member is down the others take changes and compact them away."""
    from tests.unit.memory_backend import MemoryTarget, MemoryWorld

    elb = elab.ElbLab.create(lab_factory, workdir, directors=0, servers=0)
    admin = ElbStore(elb.cluster.client(prefix=elab.PREFIX,
                                        endpoints=elb.cluster.endpoints[1:]), KEYS)
    elb.push(elab.model_data({RS1: 1}), user=None)
    target = MemoryWorld(lock_path=f"{workdir}/memory.lock")
    logs: list[str] = []
    registry.register(type("ElbTestTarget", (MemoryTarget.bound(target),),
                           {"name": "memory-elb-test"}))
    one = elb.cluster.endpoints[0]
    agent = Agent(Settings((one,), elab.PREFIX), "mem", "memory-elb-test",
                  cache_dir=f"{workdir}/cache", resync=3600.0, log=logs.append,
                  client_factory=lambda: elb.cluster.client(prefix=elab.PREFIX,
                                                            endpoints=[one], timeout=2.0))
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        def dests():
            return {k[1][3]: v["weight"] for k, v in target.state.items() if k[0] == "dest"}

        elb.wait(lambda: dests() == {RS1: 1}, what="the first apply")
        elb.cluster.stop(elb.cluster.members[0])
        for i in range(3):
            admin.change_backend("add", elab.JOB, f"10.98.0.{i + 1}", 2)
        admin.change_backend("remove", elab.JOB, "10.98.0.1")
        admin.client.compact(admin.client.status()["revision"])
        elb.cluster.start(elb.cluster.members[0])
        elb.wait(lambda: dests() == {RS1: 1, "10.98.0.2": 2, "10.98.0.3": 2}, timeout=90.0,
                 what="the agent after compaction")
        assert any("compacted" in line and "full resync" in line for line in logs), logs
    finally:
        stop.set()
        thread.join(10)
        registry.unregister("memory-elb-test")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
