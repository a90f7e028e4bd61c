"""``elbctl agent`` notices drift (issue #20), against a real three-member etcd (TLS,
authentication on, the director with its own role) and a real HAProxy director: a
server weight set by hand on HAProxy's runtime API (someone else, not dcnet) is one
audit event in the audit log, counted in the agent's metrics and recorded in etcd
under the director's status prefix on a lease. Under ``agent.drift: repair`` the agent
puts the weight back; under ``alert`` it leaves it, says ``drift`` in its status on
every pass without a second event, and says ``ok`` again once someone repairs it.
Passes that find nothing record nothing. The etcd records are bounded per director."""

from __future__ import annotations

import copy
import json
import shutil
import socket
import sys
import tempfile
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dcnet.elbstore.driftwatch import DriftWatch
from dcnet.elbstore.keys import Keys
from dcnet.elbstore.records import Status
from dcnet.elbstore.store import ElbStore
from dcnet.lab import elbstore_lab as elab
from dcnet.plan import Action, Change, Plan

pytestmark = pytest.mark.netns

RS1, RS2 = elab.server_address(1), elab.server_address(2)
BACKEND = f"{elab.JOB}:{elab.SERVICE_PORT}"
KEYS = Keys()
NAME = "dir1"
METRICS_PORT = 9118


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix="dcnet-agent-drift-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def model(policy: str) -> dict:
    data = copy.deepcopy(elab.model_data({RS1: 10, RS2: 20}))
    data["agent"] = {"drift": policy}
    return data


def by_hand(elb: elab.ElbLab, command: str) -> str:
    """Someone else on the runtime API: a raw socket, not dcnet's client."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(elb.paths(NAME).admin_socket)
        sock.sendall(command.encode() + b"\n")
        out = b""
        while chunk := sock.recv(4096):
            out += chunk
    return out.decode()


def slot_of(elb: elab.ElbLab, address: str) -> str:
    rows = by_hand(elb, f"show servers state {BACKEND}").splitlines()[2:]
    return next(line.split()[3] for line in rows if line.split()[4:5] == [address])


def weight(elb: elab.ElbLab, slot: str) -> int:
    for line in by_hand(elb, f"get weight {BACKEND}/{slot}").splitlines():
        if "(initial" in line:
            return int(line.split()[0])
    raise AssertionError(f"no weight for {slot}")


def status(elb: elab.ElbLab) -> Status | None:
    store = ElbStore(elb.cluster.client(prefix=elab.PREFIX), KEYS)
    return {s.director: s for s in store.statuses()}.get(NAME)


def audit_log(path: str) -> list[dict]:
    try:
        with open(path) as handle:
            return [json.loads(line) for line in handle]
    except FileNotFoundError:
        return []


def audit_records(elb: elab.ElbLab) -> list:
    kvs, _ = elb.cluster.client(prefix=elab.PREFIX).get_prefix(
        KEYS.director_status_prefix(NAME) + "audit/")
    return sorted(kvs, key=lambda kv: kv.key)


def scrape(port: int) -> dict[tuple, float]:
    """{(sample name, (label, value) pairs sorted): value} of the agent's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def metrics(elb: elab.ElbLab) -> dict[tuple, float]:
    return elb.lab.call(NAME, scrape, METRICS_PORT)


REPAIRED = ("dcnet_elb_agent_drift_events_total", (("action", "repaired"),))
ALERTED = ("dcnet_elb_agent_drift_events_total", (("action", "alerted"),))
GAUGE = ("dcnet_elb_drift", (("target", "haproxy"),))
PLANS = ("dcnet_elb_plans_total", (("target", "haproxy"),))
APPLIED = ("dcnet_elb_applies_total", (("result", "ok"), ("target", "haproxy")))


def runs(seen: dict[tuple, float]) -> float:
    """Plans and applies the target ran (its status file: every agent pass is one)."""
    return seen.get(PLANS, 0) + seen.get(APPLIED, 0)


def passes_later(elb: elab.ElbLab, count: int = 3):
    """A predicate true once the agent made ``count`` more passes; it returns the
    status then."""
    start = runs(metrics(elb))
    return lambda: runs(metrics(elb)) >= start + count and status(elb)


def test_agent_records_drift_and_repairs_or_alerts_by_policy(lab_factory, workdir,
                                                             monkeypatch):
    elb = elab.ElbLab.create(lab_factory, workdir, directors=1, servers=2)
    elb.setup_auth()
    log_path = f"{workdir}/audit/audit.jsonl"
    monkeypatch.setenv("DCNET_AUDIT_LOG", log_path)
    monkeypatch.setenv("DCNET_METRICS_ADDRESS", f"127.0.0.1:{METRICS_PORT}")
    assert elb.push(model("repair")) == 1
    elb.start_director(NAME, model("repair"), user=NAME, resync=0.5)
    elb.wait(lambda: (s := status(elb)) and s.result == "ok" and s.model_revision == 1,
             what="the first apply")
    slot = slot_of(elb, RS2)
    assert weight(elb, slot) == 20

    # clean passes record nothing
    elb.wait(passes_later(elb), what="clean passes")
    assert audit_log(log_path) == [] and audit_records(elb) == []
    assert elb.wait(lambda: metrics(elb), what="metrics")[REPAIRED] == 0

    # repair: the weight set by hand is put back, one event
    by_hand(elb, f"set weight {BACKEND}/{slot} 3")
    elb.wait(lambda: len(audit_log(log_path)) == 1 and weight(elb, slot) == 20,
             what="the drift repaired and audited")
    [event] = audit_log(log_path)
    assert event["event"] == "drift" and event["target"] == "haproxy"
    assert event["director"] == NAME and event["observer"]["command"] == "elbctl agent"
    assert (event["policy"], event["action"]) == ("repair", "repaired")
    assert event["model"] == "etcd model revision 1"
    servers = [c for c in event["changes"] if c["kind"] == "server"]
    assert [c["action"] for c in servers] == ["update"], event
    assert (servers[0]["old"]["weight"], servers[0]["new"]["weight"]) == (3, 20)
    assert event["repair"]["ok"] is True
    elb.wait(lambda: len(audit_records(elb)) == 1, what="the etcd audit record")
    [record] = audit_records(elb)
    assert record.lease != 0                          # expires with its lease
    stored = json.loads(record.value)
    assert (stored["time"], stored["changes"], stored["action"]) == \
        (event["time"], event["changes"], "repaired")
    assert elb.wait(lambda: metrics(elb).get(REPAIRED) == 1 and metrics(elb),
                    what="the counter")[GAUGE] == 0
    elb.wait(passes_later(elb), what="passes after the repair")
    assert len(audit_log(log_path)) == 1 and len(audit_records(elb)) == 1

    # alert: the weight set by hand stays, reported on every pass, recorded once
    assert elb.push(model("alert")) == 2
    elb.wait(lambda: (s := status(elb)) and s.result == "ok" and s.model_revision == 2,
             what="model revision 2 (agent.drift: alert)")
    by_hand(elb, f"set weight {BACKEND}/{slot} 3")
    first = elb.wait(lambda: (s := status(elb)) and s.result == "drift" and s,
                     what="the drift reported")
    assert "left as is (agent.drift: alert)" in first.errors[0], first.errors
    assert any("3 -> 20" in error for error in first.errors[1:]), first.errors
    later = elb.wait(passes_later(elb), what="passes with the drift left")
    assert later.result == "drift" and later.time > first.time
    assert weight(elb, slot) == 3
    events = audit_log(log_path)
    assert len(events) == 2, events
    assert (events[1]["policy"], events[1]["action"]) == ("alert", "alerted")
    assert "repair" not in events[1] and events[1]["model"] == "etcd model revision 2"
    assert [(c["old"]["weight"], c["new"]["weight"]) for c in events[1]["changes"]
            if c["kind"] == "server"] == [(3, 20)]
    elb.wait(lambda: len(audit_records(elb)) == 2, what="the second etcd audit record")
    seen = elb.wait(lambda: (m := metrics(elb)).get(GAUGE) == 1 and m, what="the gauge")
    assert (seen[ALERTED], seen[REPAIRED]) == (1, 1)

    # someone acts: the weight put back by hand; the agent says ok, records nothing more
    by_hand(elb, f"set weight {BACKEND}/{slot} 20")
    elb.wait(lambda: status(elb).result == "ok", what="ok again")
    elb.wait(lambda: metrics(elb).get(GAUGE) == 0, what="the gauge back to 0")
    assert len(audit_log(log_path)) == 2 and len(audit_records(elb)) == 2
    assert metrics(elb)[ALERTED] == 1



def test_etcd_audit_records_are_bounded_per_director(lab_factory, workdir):
    elb = elab.ElbLab.create(lab_factory, workdir, directors=0, servers=0)
    client = elb.cluster.client(prefix=elab.PREFIX)
    log_path = f"{workdir}/audit.jsonl"
    watch = DriftWatch("dir9", "haproxy", KEYS, log_path, keep=2, log=lambda _: None)

    def plan(weight: int) -> Plan:
        return Plan("haproxy", (Change(Action.UPDATE, "server", (BACKEND, f"{RS1}:8080"),
                                       {"weight": weight}, {"weight": 10}),))

    for weight in (1, 2, 3):
        assert watch.noticed(plan(weight), "m", "alert") is not None
        watch.flush(client)
    assert watch.noticed(plan(3), "m", "alert") is None      # the drift left standing
    kvs, _ = client.get_prefix(KEYS.director_status_prefix("dir9") + "audit/")
    kept = [json.loads(kv.value) for kv in sorted(kvs, key=lambda kv: kv.key)]
    assert [r["changes"][0]["old"]["weight"] for r in kept] == [2, 3]
    assert all(kv.lease != 0 for kv in kvs)
    assert [e["changes"][0]["old"]["weight"] for e in audit_log(log_path)] == [1, 2, 3]
    assert watch.events == {"repaired": 0, "alerted": 3}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
