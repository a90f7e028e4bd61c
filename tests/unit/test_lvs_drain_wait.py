"""``elbctl backend drain|remove`` on LVS over the fake IPVS (dcnet.lvs.dynamic.drain_backend,
dcnet.lvs.drain.wait_idle): weight 0 at once, a wait that ends "safe" when the server's
active connections reach 0 or "deadline passed" at ``lvs.drain_deadline``, the lock
free while waiting (another ``backend add`` runs in the middle of the wait), a re-check
before deleting (a server added back meanwhile is left alone), ``remove --now``, the
quiescent-template sysctl hook, and the model field validated at load.

The clock is simulated: ``sleep`` advances it and runs what the test scripts at that
moment (connections ending, another command), so nothing here depends on real time.
"""

from __future__ import annotations

import pytest

from dcnet.lab import lvs_lab as lvslab
from dcnet.lvs import drain
from dcnet.lvs.dynamic import (
    EXIT_DEADLINE,
    EXIT_READDED,
    BackendCommandError,
    change_backend,
    drain_backend,
)
from dcnet.lvs.fake import FakeIPVS
from dcnet.lvs.ipvs import WireService
from dcnet.lvs.store import Store
from dcnet.model import ModelError, parse_model
from dcnet.target import apply_plan
from tests.unit.test_lvs_contract import observed
from tests.unit.test_lvs_plan import target

pytestmark = pytest.mark.unit

VIPS = (lvslab.VIPS["telecom"][0], lvslab.VIPS["unicom"][0])
SERVICES = [WireService(2, 6, vip, 80) for vip in VIPS]
RS = "10.20.0.11"


def model(extra: str = ""):
    text = lvslab.model_text().replace("lvs: {drain_seconds: 30}",
                                       "lvs: {drain_seconds: 30" + extra + "}")
    return parse_model(text, source="m.yaml", read_text=lvslab.CIDR_FILES.__getitem__)


@pytest.fixture
def applied(tmp_path):
    store = Store(str(tmp_path))
    ipvs = FakeIPVS()
    backend = target(ipvs, store.directory)
    assert apply_plan(backend, backend.plan(model(", drain_deadline: 10"))).ok
    return store, ipvs


def weights(ipvs, address=RS):
    return [observed(ipvs)[("tcp", vip, 80)][1].get(("tcp", vip, 80, address, 8080),
                                                     {}).get("weight") for vip in VIPS]


class Script:
    """A simulated clock: ``sleep`` advances it and runs the actions due by then."""

    def __init__(self, actions: dict[float, callable]):
        self.now, self.actions, self.sleeps = 0.0, dict(actions), 0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds
        for at in sorted(a for a in self.actions if a <= self.now):
            self.actions.pop(at)()


def run(store, ipvs, action, script, **kw):
    return drain_backend(store, ipvs, action, lvslab.JOB_NAT, RS, monotonic=script.clock,
                         sleep=script.sleep, quiescent=lambda: None, **kw)


def conns(ipvs, active, inactive=0, address=RS):
    for service in SERVICES:
        ipvs.set_conns(service, address, 8080, active, inactive)


def test_the_model_field_defaults_to_30_and_is_validated():
    assert lvslab.model().lvs.drain_deadline == 30
    assert model(", drain_deadline: 5").lvs.drain_deadline == 5
    for bad in ("-1", "3601", "soon"):
        with pytest.raises(ModelError, match="drain_deadline"):
            model(f", drain_deadline: {bad}")


def test_the_store_keeps_the_applied_deadline(applied):
    store, _ipvs = applied
    assert store.drain_deadline() == 10
    assert Store(store.directory + "-none").drain_deadline() == 30


def test_drain_returns_safe_once_the_active_connections_end(applied):
    store, ipvs = applied
    conns(ipvs, 3)
    script = Script({2.0: lambda: conns(ipvs, 1, 2), 4.0: lambda: conns(ipvs, 0, 3)})
    result = run(store, ipvs, "drain", script)
    assert result.outcome.state == drain.SAFE and result.exit_code == 0
    assert 4.0 <= result.outcome.waited < 10
    assert weights(ipvs) == [0, 0]                  # drained, not deleted
    assert store.registry()[lvslab.JOB_NAT][RS]["state"] == "draining"
    text = result.to_text()
    assert "safe: 10.20.0.11 has no active connection" in text
    assert "6 closing connection entries left" in text       # inactive do not count


def test_drain_says_deadline_passed_with_the_connections_left(applied):
    store, ipvs = applied
    conns(ipvs, 2)
    result = run(store, ipvs, "drain", Script({}))
    assert result.outcome.state == drain.DEADLINE and result.exit_code == EXIT_DEADLINE
    assert result.outcome.waited >= 10                     # the applied model's deadline
    assert "deadline passed after 10.0s with 4 active connection(s)" in result.to_text()
    assert weights(ipvs) == [0, 0]


def test_an_explicit_deadline_wins(applied):
    store, ipvs = applied
    conns(ipvs, 1)
    script = Script({})
    result = run(store, ipvs, "drain", script, deadline=0)
    assert result.outcome.state == drain.DEADLINE and script.sleeps == 0


def test_remove_waits_then_deletes(applied):
    store, ipvs = applied
    conns(ipvs, 1, 1)
    seen = []
    script = Script({1.0: lambda: seen.append(weights(ipvs)), 3.0: lambda: conns(ipvs, 0, 2)})
    result = run(store, ipvs, "remove", script)
    assert seen == [[0, 0]]                       # drained (not deleted) while waiting
    assert result.outcome.state == drain.SAFE and result.exit_code == 0
    assert weights(ipvs) == [None, None]          # deleted, with its closing entries
    assert RS in store.registry()[lvslab.JOB_NAT]         # in the model: kept as removed
    assert store.registry()[lvslab.JOB_NAT][RS]["state"] == "removed"
    assert store.drain_set() == {}


def test_remove_past_the_deadline_deletes_and_counts_what_it_cut(applied):
    store, ipvs = applied
    conns(ipvs, 2)
    result = run(store, ipvs, "remove", Script({}))
    assert result.exit_code == EXIT_DEADLINE and weights(ipvs) == [None, None]
    text = result.to_text()
    assert text.count("with 2 active connection(s)") == 2 and "deleting dest" in text


def test_the_lock_is_free_while_waiting_and_a_readd_is_not_removed(applied):
    store, ipvs = applied
    conns(ipvs, 1)
    added = []

    def add_others():                      # another hook in the middle of the wait
        added.append(change_backend(store, ipvs, "add", lvslab.JOB_NAT, "10.20.0.60",
                                    lock_timeout=0))
        added.append(change_backend(store, ipvs, "add", lvslab.JOB_NAT, RS, lock_timeout=0))

    result = run(store, ipvs, "remove", Script({1.0: add_others}))
    assert [r.errors for r in added] == [[], []]
    assert weights(ipvs, "10.20.0.60") == [1, 1]
    assert result.outcome.state == drain.READDED and result.exit_code == EXIT_READDED
    assert len(result.steps) == 1                          # no remove step
    assert weights(ipvs) == [3, 3]                         # added back, left alone
    assert "added back meanwhile" in result.to_text()


def test_a_readd_between_the_wait_and_the_remove_is_left_alone(applied, monkeypatch):
    store, ipvs = applied
    real = drain.wait_idle

    def wait_then_readd(*a, **kw):
        outcome = real(*a, **kw)
        change_backend(store, ipvs, "add", lvslab.JOB_NAT, RS, lock_timeout=0)
        return outcome

    monkeypatch.setattr(drain, "wait_idle", wait_then_readd)
    result = run(store, ipvs, "remove", Script({}))
    assert result.steps[1].skipped and "added back while it drained" in result.to_text()
    assert weights(ipvs) == [3, 3]


def test_remove_now_deletes_at_once_whatever_the_connections(applied):
    store, ipvs = applied
    conns(ipvs, 5)
    script = Script({})
    result = run(store, ipvs, "remove", script, now=True)
    assert result.outcome is None and script.sleeps == 0 and result.exit_code == 0
    assert weights(ipvs) == [None, None]
    with pytest.raises(BackendCommandError, match="only remove"):
        run(store, ipvs, "drain", script, now=True)


def test_removing_an_unknown_server_does_nothing(applied):
    store, ipvs = applied
    before = (ipvs.writes, store.registry())
    result = drain_backend(store, ipvs, "remove", lvslab.JOB_NAT, "10.20.0.99",
                           quiescent=lambda: None)
    assert result.steps[0].skipped and result.outcome is None and result.exit_code == 0
    assert (ipvs.writes, store.registry()) == before


def test_the_quiescent_sysctl_hook_runs_after_the_drain_and_its_note_is_shown(applied):
    store, ipvs = applied
    calls = []

    def quiescent():
        calls.append(weights(ipvs))
        return "set net.ipv4.vs.expire_quiescent_template=1"

    result = drain_backend(store, ipvs, "drain", lvslab.JOB_NAT, RS, quiescent=quiescent)
    assert calls == [[0, 0]] and result.outcome.state == drain.SAFE
    assert "expire_quiescent_template=1" in result.to_text()


def test_a_server_that_is_not_programmed_is_safe_at_once():
    script = Script({})
    outcome = drain.wait_idle("x", lambda: drain.Counts(), 30, clock=script.clock,
                              sleep=script.sleep)
    assert outcome.state == drain.ABSENT and outcome.safe and script.sleeps == 0


def test_safe_needs_two_quiet_polls_in_a_row():
    """A handshake under way at the first read (SYN_RECV counts inactive) shows up as
    active at the second: not safe until two reads in a row see none."""
    reads = iter([drain.Counts(2, 0, 1), drain.Counts(2, 1, 0), drain.Counts(2, 0, 1),
                  drain.Counts(2, 0, 1)])
    script = Script({})
    outcome = drain.wait_idle("x", lambda: next(reads), 30, clock=script.clock,
                              sleep=script.sleep)
    assert outcome.state == drain.SAFE and script.sleeps == 3


@pytest.mark.parametrize("args", [["drain", "--now"], ["remove", "--now", "--target", "haproxy"]])
def test_the_cli_refuses_now_where_it_means_nothing(args, tmp_path):
    from click.testing import CliRunner

    from dcnet.cli.elbctl_backend import backend_cmd

    action, *rest = args
    run = CliRunner().invoke(backend_cmd, [action, lvslab.JOB_NAT, RS, *rest,
                                           "--lvs-state-dir", str(tmp_path)])
    assert run.exit_code == 1 and "--now is for" in run.output, run.output
