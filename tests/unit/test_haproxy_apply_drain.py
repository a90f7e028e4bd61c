"""A full apply drains the servers it removes before maintenance (issue #14), over the
runtime API fake (dcnet.haproxy.fake, kept honest by its contract suite): every removal
of the plan goes to ``drain`` first, one wait covers them all, then ``maint``; a server
drained already is not drained again; when the wait cannot run, the servers drained for
it are made ready again. (tests/netns/test_haproxy_drain.py runs it on a real HAProxy.)"""

from __future__ import annotations

import pytest

from dcnet.haproxy import drain
from dcnet.haproxy.backend import HAProxyTarget
from dcnet.haproxy.daemon import write_initial
from dcnet.haproxy.fake import FakeRuntime
from dcnet.haproxy.paths import Paths
from dcnet.haproxy.runtime import HAProxyUnavailable
from dcnet.lab import haproxy_lab as hlab
from dcnet.target import apply_plan

pytestmark = pytest.mark.unit
RS1, RS2, RS3 = (hlab.server_address(i) for i in (1, 2, 3))
BACKEND = f"{hlab.JOB}:{hlab.SERVICE_PORT}"


def model(servers):
    return hlab.model_of(hlab.model_data(servers))


@pytest.fixture
def target(tmp_path):
    paths = Paths(run_dir=str(tmp_path / "run"))
    write_initial(model({RS1: 10}), paths)
    fake = FakeRuntime(config_path=paths.config)
    sent: list[str] = []
    command = fake.command

    def recording(text: str) -> str:
        if not text.startswith("show "):
            sent.append(text)
        return command(text)

    fake.command = recording
    logs: list[str] = []
    backend = HAProxyTarget(run_dir=paths.run_dir, log=logs.append, runtime=fake)
    assert apply_plan(backend, backend.plan(model({RS1: 10, RS2: 10, RS3: 10}))).ok
    sent.clear()
    return backend, fake, sent, logs


def states(sent: list[str]) -> list[str]:
    return [text.replace(f"set server {BACKEND}/", "") for text in sent if " state " in text]


def test_removals_are_drained_together_then_put_in_maintenance(target):
    backend, fake, sent, logs = target
    assert apply_plan(backend, backend.plan(model({RS1: 10})), force=True).ok
    assert states(sent) == ["s2 state drain", "s3 state drain", "s2 state maint",
                            "s3 state maint"]
    assert any("removal of 2 server(s): drained after" in line for line in logs), logs
    assert [r.server for r in fake.servers(BACKEND) if not r.free] == ["s1"]


def test_a_drained_server_is_not_drained_again_and_nothing_else_waits(target):
    backend, _, sent, logs = target
    assert apply_plan(backend, backend.plan(model({RS1: 10, RS2: 0, RS3: 10}))).ok
    assert states(sent) == ["s2 state drain"] and logs == []
    sent.clear()
    assert apply_plan(backend, backend.plan(model({RS1: 10, RS3: 10}))).ok
    assert states(sent) == ["s2 state maint"]
    assert any("removal of 1 server(s)" in line for line in logs), logs


def test_a_wait_that_cannot_run_makes_the_drained_servers_ready_again(target, monkeypatch):
    backend, fake, sent, _ = target

    def unavailable(*args, **kwargs):
        raise HAProxyUnavailable("HAProxy is not running")

    monkeypatch.setattr(drain, "wait_drained", unavailable)
    result = apply_plan(backend, backend.plan(model({RS1: 10})), force=True)
    assert not result.ok and isinstance(result.error, HAProxyUnavailable)
    assert states(sent) == ["s2 state drain", "s3 state drain", "s2 state ready",
                            "s3 state ready"]
    assert {r.server: r.attrs()["state"] for r in fake.servers(BACKEND) if not r.free} == \
        {"s1": "ready", "s2": "ready", "s3": "ready"}


def test_a_slot_taken_over_from_a_removed_server_is_drained_before_it_is_readdressed(
        target):
    backend, fake, sent, logs = target
    five = {hlab.server_address(i): 10 for i in range(1, 6)}
    assert apply_plan(backend, backend.plan(model(five)), force=True).ok
    assert all(not r.free for r in fake.servers(BACKEND))       # no free slot left
    sent.clear()
    replaced = {**{k: v for k, v in five.items() if k != hlab.server_address(5)},
                hlab.server_address(6): 10}
    assert apply_plan(backend, backend.plan(model(replaced)), force=True).ok
    s5 = [text for text in sent if f"{BACKEND}/s5 " in text]
    assert s5[0] == f"set server {BACKEND}/s5 state drain", s5
    assert f"addr {hlab.server_address(6)} " in s5[1], s5
    assert any("removal of 1 server(s)" in line for line in logs), logs
