"""Drain reports and waiting for them (pure parts of dcnet.elbstore.drains / drainwait):
the report document and its key, a target outcome's verdict, the waiter's exit codes and
words, the desired state's record revisions, the follower's life cycle. The etcd and
HAProxy sides run for real in tests/netns/test_backend_drain_etcd.py."""

from __future__ import annotations

import threading

import pytest

from dcnet.elbstore.desired import DesiredState
from dcnet.elbstore.drains import DrainFollower, DrainReport, verdict
from dcnet.elbstore.drainwait import DrainWait
from dcnet.elbstore.keys import Keys
from dcnet.elbstore.records import RecordError, encode_entry
from dcnet.haproxy.drain import DrainOutcome as HAProxyOutcome
from dcnet.lvs import drain as lvs_drain
from dcnet.sysio.etcd.codec import Event, KeyValue

KEYS = Keys()
JOB = "job.web_service.shop_cluster.prod_pdl.retail_owt.sre_cop.example"


def report(director="d1", state="drained", record=7, active=0):
    return DrainReport(director, JOB, "10.0.0.5", record, state, active, 1.0, "words")


def test_report_round_trip_and_garbage():
    one = report(state="draining", active=3)
    assert DrainReport.decode(one.encode()) == one and not one.final
    assert report().final
    for bad in (b"nonsense", b'{"director": "d1"}', b'{"record": "7", "state": "x", '
                b'"director": "d", "service": "s", "server": "a"}'):
        with pytest.raises(RecordError, match="not a drain report"):
            DrainReport.decode(bad, "k")


def test_drain_key_sits_under_the_directors_status_prefix_and_parses_back():
    key = KEYS.drain_report("d1", JOB, "[2001:db8::1]:80")
    assert key.startswith(KEYS.director_status_prefix("d1"))
    assert KEYS.parse(key) == ("drain", "d1", JOB, "[2001:db8::1]:80")
    assert KEYS.parse(KEYS.status("d1")) == ("status", "d1")


def test_verdict_of_haproxy_and_lvs_outcomes():
    assert verdict(HAProxyOutcome(["b/s1"], True, 0.5)) == ("drained", 0)
    assert verdict(HAProxyOutcome(["b/s1"], False, 2.0, {"b/s1": 2})) == ("deadline", 2)
    counts = lvs_drain.Counts(dests=1, active=4, weight=0)
    assert verdict(lvs_drain.DrainOutcome("a", lvs_drain.SAFE, 1.0)) == ("drained", 0)
    assert verdict(lvs_drain.DrainOutcome("a", lvs_drain.ABSENT, 0.0)) == ("drained", 0)
    assert verdict(lvs_drain.DrainOutcome("a", lvs_drain.DEADLINE, 30.0, counts)) == \
        ("deadline", 4)
    assert verdict(lvs_drain.DrainOutcome("a", lvs_drain.READDED, 1.0, counts))[0] == "readded"


def wait(directors, reports, changed=None):
    out = DrainWait(JOB, "10.0.0.5", 7, 45.0, directors, dict(reports), changed, 3.0)
    return out.exit_code, out.to_text()


def test_exit_codes_and_words():
    code, text = wait(["d1", "d2"], {"d1": report("d1"), "d2": report("d2")})
    assert code == 0 and text.startswith("safe:") and "every director (2)" in text
    code, text = wait(["d1", "d2"], {"d1": report("d1"), "d2": report("d2", "deadline")})
    assert code == 4 and "d2: deadline: words" in text
    code, text = wait(["d1", "d2"], {"d1": report("d1")})
    assert code == 4 and "no answer from d2" in text and "d2: did not answer" in text
    code, text = wait(["d1"], {"d1": report("d1", "draining", active=2)})
    assert code == 4 and "still draining (2 connection(s) left" in text
    code, text = wait(["d1"], {"d1": report("d1", "failed")})
    assert code == 4
    code, text = wait(["d1"], {"d1": report("d1", "readded")})
    assert code == 5 and "do not stop it" in text
    code, text = wait(["d1"], {}, changed="was active (etcd revision 9)")
    assert code == 5 and "was active" in text
    code, text = wait([], {})
    assert code == 0 and "no director" in text


def kv(key, value, rev):
    return KeyValue(key, value.encode(), rev, rev, 1, 0)


def test_desired_state_keeps_each_backend_records_revision():
    state = DesiredState(KEYS)
    key = KEYS.backend(JOB, "10.0.0.5")
    draining = encode_entry({"weight": 3, "state": "draining"})
    state.load_snapshot(None, None, [kv(key, draining, 4)], 5)
    assert state.records == {(JOB, "10.0.0.5"): 4}
    # drained again (same entry, new record): a change, so agents report the new record
    assert state.apply_events(6, [Event("put", kv(key, draining, 6))])
    assert state.records[(JOB, "10.0.0.5")] == 6
    assert state.apply_events(7, [Event("delete", kv(key, "", 7))])
    assert state.records == {}


class _Waiting:
    """A target whose wait ends only when told to (or when its wait is abandoned)."""

    name = "stub"

    def __init__(self):
        self.release = threading.Event()
        self.closed = 0

    def wait_drained(self, model, service, ident, *, progress, sleep):
        progress(2)
        while not self.release.is_set():
            sleep(0.01)
        progress(0)
        return HAProxyOutcome(["b/s1"], True, 0.1)

    def close(self):
        self.closed += 1


def test_follower_reports_progress_then_the_end_and_forgets_what_stops_draining():
    target, got = _Waiting(), []
    done = threading.Event()

    def submit(key, one):
        got.append((key, one))
        if one is not None and one.final:
            done.set()

    follower = DrainFollower("d1", lambda: target, submit)
    registry = {JOB: {"10.0.0.5": {"weight": 3, "state": "draining"},
                      "10.0.0.6": {"weight": 3, "state": "active"}}}
    records = {(JOB, "10.0.0.5"): 4, (JOB, "10.0.0.6"): 2}
    follower.follow(registry, records, model=None)
    follower.follow(registry, records, model=None)          # already followed: no second
    target.release.set()
    assert done.wait(10)
    follower.stop()
    states = [(one.state, one.active, one.record) for _key, one in got]
    assert states == [("draining", 2, 4), ("draining", 0, 4), ("drained", 0, 4)]
    assert target.closed == 1
    # the record is added back: its report is deleted
    registry[JOB]["10.0.0.5"]["state"] = "active"
    follower.follow(registry, records, model=None)
    assert got[-1] == ((JOB, "10.0.0.5"), None)


def test_a_wait_abandoned_reports_nothing_more():
    target, got = _Waiting(), []
    follower = DrainFollower("d1", lambda: target, lambda key, one: got.append(one))
    registry = {JOB: {"10.0.0.5": {"weight": 3, "state": "draining"}}}
    follower.follow(registry, {(JOB, "10.0.0.5"): 4}, model=None)
    follower.follow({}, {}, model=None)                     # the record went away
    follower.stop()
    assert all(not t.is_alive() for t in follower.threads)
    assert [one.state for one in got if one is not None] in ([], ["draining"])
    assert got[-1] is None or got[-1].state == "draining"
    assert target.closed == 1


def test_a_target_without_sessions_reports_drained_at_once():
    class NoSessions:
        name = "dns"

        def close(self):
            pass

    got = []
    follower = DrainFollower("d1", NoSessions, lambda key, one: got.append(one))
    follower.follow({JOB: {"10.0.0.5": {"weight": 1, "state": "draining"}}},
                    {(JOB, "10.0.0.5"): 4}, model=None)
    follower.stop()
    assert [(one.state, one.detail) for one in got] == [
        ("drained", "target dns holds no connection of its own: nothing counted")]


def test_the_lvs_target_waits_for_a_drained_servers_active_connections(tmp_path):
    """LVSTarget.wait_drained (what an LVS agent runs) over the fake IPVS, after the
    agent's apply of the effective model put the server at weight 0."""
    from dcnet.elbstore.effective import effective_model
    from dcnet.lab import lvs_lab as lvslab
    from dcnet.lvs.fake import FakeIPVS
    from dcnet.lvs.ipvs import WireService
    from dcnet.target import apply_plan
    from tests.unit.test_lvs_plan import target

    server = "10.20.0.11"
    services = [WireService(2, 6, lvslab.VIPS[c][0], 80) for c in ("telecom", "unicom")]
    ipvs = FakeIPVS()
    director = target(ipvs, tmp_path)
    drained = effective_model(lvslab.model(), {lvslab.JOB_NAT: {
        server: {"weight": 5, "state": "draining"}}})
    assert apply_plan(director, director.plan(drained)).ok
    for service in services:
        ipvs.set_conns(service, server, 8080, 2, 0)
    seen, sleeps = [], []

    def sleep(seconds):               # the connections end after the second poll
        sleeps.append(seconds)
        if len(sleeps) == 2:
            for service in services:
                ipvs.set_conns(service, server, 8080, 0, 1)

    outcome = director.wait_drained(drained, lvslab.JOB_NAT, server, progress=seen.append,
                                    sleep=sleep)
    assert verdict(outcome) == ("drained", 0) and outcome.counts.inactive == 2
    assert seen == [4, 4, 0, 0]                       # two quiet polls end the wait
    unknown = director.wait_drained(drained, "job.no.such", server, sleep=sleep)
    assert verdict(unknown) == ("drained", 0) and unknown.state == lvs_drain.ABSENT
