"""The haproxy target's runtime-change path with the runtime API faked
(:class:`dcnet.haproxy.fake.FakeRuntime`, kept honest by
tests/netns/test_haproxy_runtime_contract.py): servers added, re-weighted and removed in
a running backend with free slots go through the admin socket with no reload (the file
and the server-state file are written for the next reload), and a refused command
rolls the earlier changes back."""

from __future__ import annotations

import pytest

from dcnet.haproxy.backend import HAProxyTarget
from dcnet.haproxy.carry import file_servers
from dcnet.haproxy.daemon import write_initial
from dcnet.haproxy.fake import FakeRuntime
from dcnet.haproxy.paths import Paths
from dcnet.haproxy.runtime import RuntimeCommandError, parse_servers_state
from dcnet.lab import haproxy_lab as hlab
from dcnet.target import apply_plan

pytestmark = pytest.mark.unit
RS1, RS2, RS3 = (hlab.server_address(i) for i in (1, 2, 3))
BACKEND = f"{hlab.JOB}:{hlab.SERVICE_PORT}"
PORT = hlab.SERVER_PORT


def model(servers):
    return hlab.model_of(hlab.model_data(servers))


@pytest.fixture
def target(tmp_path):
    """A target on a file rendered for rs1 (weight 10), HAProxy faked on that file."""
    paths = Paths(run_dir=str(tmp_path / "run"))
    write_initial(model({RS1: 10}), paths)
    fake = FakeRuntime(config_path=paths.config)
    return HAProxyTarget(run_dir=paths.run_dir, log=lambda text: None, runtime=fake), fake


def running(fake) -> dict[str, tuple]:
    return {r.server: None if r.free else (r.key, r.attrs()) for r in fake.servers(BACKEND)}


def test_add_and_reweight_go_through_the_runtime_api(target):
    backend, fake = target
    wanted = model({RS1: 20, RS2: 30})
    plan = backend.plan(wanted)
    assert plan.notes[0] == "2 runtime changes, 0 reloads"
    result = apply_plan(backend, plan)
    assert result.ok, result.error
    assert running(fake) == {"s1": (f"{RS1}:{PORT}", {"state": "ready", "weight": 20}),
                             "s2": (f"{RS2}:{PORT}", {"state": "ready", "weight": 30}),
                             "s3": None, "s4": None, "s5": None}
    assert fake.reloads == 0 and result.writes["reloads"] == 0
    with open(backend.paths.config) as handle:   # written for the next reload, not reloaded
        servers = file_servers(handle.read())
    assert servers[(BACKEND, f"{RS2}:{PORT}")] == {"state": "ready", "weight": 30, "slot": 1}
    assert result.writes["file writes"] == 1
    with open(backend.paths.state_file) as handle:    # saved for the next reload
        assert parse_servers_state(handle.read()) == fake.servers()
    assert backend.plan(wanted).empty


def test_remove_frees_the_slot_and_drain_keeps_it(target):
    backend, fake = target
    assert apply_plan(backend, backend.plan(model({RS1: 10, RS2: 30, RS3: 5}))).ok
    assert apply_plan(backend, backend.plan(model({RS2: 0, RS3: 5})), force=True).ok
    assert running(fake) == {"s1": None,
                             "s2": (f"{RS2}:{PORT}", {"state": "drain"}),
                             "s3": (f"{RS3}:{PORT}", {"state": "ready", "weight": 5}),
                             "s4": None, "s5": None}
    assert fake.reloads == 0
    assert backend.plan(model({RS2: 0, RS3: 5})).empty


def test_a_refused_command_rolls_the_runtime_changes_back(target, monkeypatch):
    backend, fake = target
    before = running(fake)
    command = fake.command

    def refuse_rs3(text):
        if f" addr {RS3} " in text:
            raise RuntimeCommandError(f"HAProxy refused {text!r}: No such server.")
        return command(text)

    monkeypatch.setattr(fake, "command", refuse_rs3)
    plan = backend.plan(model({RS1: 20, RS2: 30, RS3: 5}))
    result = apply_plan(backend, plan, force=True)
    assert not result.ok and isinstance(result.error, RuntimeCommandError)
    assert result.applied and result.undone
    assert running(fake) == before
    assert backend.plan(model({RS1: 10})).empty
