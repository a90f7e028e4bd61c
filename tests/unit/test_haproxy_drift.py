"""The haproxy target's piecewise drift check (:mod:`dcnet.haproxy.drift`) on HAProxy's
runtime API faked (:class:`dcnet.haproxy.fake.FakeRuntime`): the drift-check contract
(tests/drift_contract.py, drifted() == not plan.empty) for the variants of an applied
model given in pieces, a model at the target (False) against changes only a reload
carries, only the runtime API carries, or only the backend registry makes (True), and
the pure line reader the check streams ``show servers state`` with. The same contract
on a real HAProxy: tests/netns/test_haproxy_drift.py."""

from __future__ import annotations

import dataclasses

import pytest

from dcnet.haproxy import drift
from dcnet.haproxy.backend import HAProxyTarget
from dcnet.haproxy.daemon import write_initial
from dcnet.haproxy.fake import FakeRuntime
from dcnet.haproxy.paths import Paths
from dcnet.haproxy.render import parse_file
from dcnet.haproxy.runtime import decoded_lines, parse_servers_state
from dcnet.lab import haproxy_lab as hlab
from dcnet.model import pieces as model_pieces
from dcnet.target import apply_plan, registry
from tests.drift_contract import assert_drift_agrees

pytestmark = pytest.mark.unit
RS1, RS2, RS3 = (hlab.server_address(i) for i in (1, 2, 3))
SERVICES = 5


def model(servers=None, services=SERVICES, **haproxy):
    servers = servers if servers is not None else {RS1: 10, RS2: 20, RS3: 0}
    return hlab.model_of(hlab.model_data(servers, services=services, **haproxy))


@pytest.fixture
def world(tmp_path):
    """("haproxy-fake" registered: the haproxy target on a FakeRuntime), its target,
    the fake and the applied model: 5 services over rs1..rs3 (rs3 drained)."""
    paths = Paths(run_dir=str(tmp_path / "run"))
    applied = model()
    write_initial(applied, paths)
    fake = FakeRuntime(config_path=paths.config)

    class Faked(HAProxyTarget):
        name = "haproxy-fake"

        def __init__(self, run_dir=None, config=None):
            super().__init__(run_dir, config, log=lambda text: None, runtime=fake)

    registry.register(Faked)
    try:
        yield Faked(paths.run_dir), fake, applied
    finally:
        registry.unregister("haproxy-fake")


def in_pieces(model_, per_piece=2):
    return model_pieces.Pieces(model_pieces.pack(model_, per_piece))


def agrees(target, model_) -> bool:
    """drifted() of the model in pieces, checked equal to the whole plan's answer."""
    drifted = target.drifted(in_pieces(model_))
    assert drifted == (not target.plan(model_).empty)
    return drifted


def test_the_drift_contract_on_the_fake(world):
    target, _, applied = world
    seen = assert_drift_agrees("haproxy-fake", {"run_dir": target.paths.run_dir}, applied)
    assert len(seen) == 6 and not seen["as applied"]


def test_the_contract_after_runtime_changes_were_applied(world):
    """Applied through the runtime API (no reload): the file and the slots moved, the
    file's server lines no longer are the slots' order (rs2 gone, rs1 re-weighted, a
    new server in a freed slot)."""
    target, fake, _ = world
    changed = model({RS1: 30, hlab.server_address(4): 5, RS3: 0})
    plan = target.plan(changed)
    assert plan.notes[0].endswith("0 reloads")
    assert apply_plan(target, plan, force=True).ok
    assert fake.reloads == 0
    assert_drift_agrees("haproxy-fake", {"run_dir": target.paths.run_dir}, changed)


def test_a_model_at_the_target_is_no_drift_and_a_reload_only_change_is(world):
    target, _, applied = world
    assert not agrees(target, applied)
    for name, other in (
            ("a global setting (timeout)", model(timeout_connect=7)),
            ("maxconn", model(maxconn=3000)),
            ("spare slots do not change a running backend", model(spare_slots=6)),
            ("a health check setting", _with_check(applied, interval=2)),
            ("a port", _with_port(applied, 0, 8081))):
        expected = name != "spare slots do not change a running backend"
        assert agrees(target, other) is expected, name


def test_a_default_maxconn_counts_the_binds_of_every_piece(tmp_path, monkeypatch):
    """No ``maxconn`` in the model and a low descriptor limit: the global attrs' maxconn
    depends on how many binds all the services have, which the pieces count."""
    from dcnet.haproxy import limits

    monkeypatch.setattr(limits, "hard_nofile", lambda pid=None: 1000)
    paths = Paths(run_dir=str(tmp_path / "run"))
    applied = model(maxconn=None, services=4)
    write_initial(applied, paths)
    target = HAProxyTarget(run_dir=paths.run_dir, log=lambda text: None,
                           runtime=FakeRuntime(config_path=paths.config))
    with open(paths.config) as handle:            # maxconn lowered to fit the limit
        assert parse_file(handle.read()).global_attrs["maxconn"] < limits.DEFAULT_MAXCONN
    assert not agrees(target, applied)
    fewer = dataclasses.replace(applied, services=applied.services[:2])
    assert agrees(target, fewer)


def test_a_slot_changed_behind_dcnets_back_is_drift(world):
    target, fake, applied = world
    backend = f"{hlab.job_name(SERVICES - 1)}:{hlab.SERVICE_PORT + SERVICES - 1}"
    fake.set_server(backend, "s1", weight=11)
    assert agrees(target, applied)
    fake.set_server(backend, "s1", weight=10)
    assert not agrees(target, applied)
    fake.set_server(backend, "s5", address=hlab.server_address(9), port=hlab.SERVER_PORT)
    fake.set_server(backend, "s5", state="ready", weight=1)       # a free slot filled
    assert agrees(target, applied)
    fake.set_server(backend, "s5", state="maint")                 # free again
    assert not agrees(target, applied)


def test_the_backend_registry_is_merged_piece_by_piece(world):
    target, _, applied = world
    job = hlab.job_name(3)
    target.backends.save_registry({job: {f"{RS2}:{hlab.SERVER_PORT}":
                                         {"weight": 0, "state": "draining"}}})
    assert agrees(target, applied)
    assert apply_plan(target, target.plan(applied)).ok
    assert not agrees(target, applied)
    target.backends.save_registry({})
    assert agrees(target, applied)


def test_a_service_marker_missing_or_extra_in_the_file_is_drift(world):
    target, _, applied = world
    with open(target.paths.config) as handle:
        text = handle.read()
    marker = f"# dcnet-service {hlab.job_name(2)} "
    with open(target.paths.config, "w") as handle:      # its marker turned to a comment
        handle.write(text.replace(marker, "# moved " + marker[2:]))
    assert agrees(target, applied)
    with open(target.paths.config, "w") as handle:
        handle.write(text)
    assert not agrees(target, applied)
    assert agrees(target, model(services=SERVICES - 1))   # the file has one more
    assert agrees(target, model(services=SERVICES + 1))   # the model has one more


def test_a_service_without_servers_left_out_of_the_model_is_drift(world):
    """Its marker is all the file and HAProxy have of it (no filled slot)."""
    target, _, applied = world
    last = applied.services[-1]
    empty = dataclasses.replace(applied, services=(
        *applied.services[:-1], dataclasses.replace(last, real_servers=())))
    assert apply_plan(target, target.plan(empty), force=True).ok
    assert not agrees(target, empty)
    assert agrees(target, dataclasses.replace(applied, services=applied.services[:-1]))


def test_rows_of_a_backend_listed_apart_are_planned_whole(world, monkeypatch):
    """show servers state lists a backend's slots together; if it did not, the check
    plans the whole model (and still answers as the plan)."""
    target, fake, applied = world
    lines = list(fake.servers_state_lines())
    monkeypatch.setattr(fake, "servers_state_lines",
                        lambda: iter([*lines[:2], *lines[3:], lines[2]]))
    planned = []
    plan = target.plan
    monkeypatch.setattr(target, "plan", lambda m: planned.append(m) or plan(m))
    assert not target.drifted(in_pieces(applied))
    assert len(planned) == 1


def test_decoded_lines_split_as_the_whole_answer():
    text = "1\r\n# be_id\n\u00e9 line\r\n\u20ac\x0c\u00fc\n\nlast"
    data = text.encode() + b"\xff"
    for size in (1, 2, 3, 5, len(data)):
        chunks = [data[i:i + size] for i in range(0, len(data), size)]
        assert list(decoded_lines(chunks)) == data.decode(errors="replace").splitlines()


def test_the_streamed_rows_are_the_parsed_rows(world):
    _, fake, _ = world
    rows = [r for r in parse_servers_state(fake.text())]
    assert len(rows) == SERVICES * 7
    streamed = drift._slot_servers(fake.servers_state_lines())
    assert set(streamed) == {r.backend for r in rows if not r.free}


def _with_check(model_, **changes):
    services = tuple(dataclasses.replace(s, health_check=dataclasses.replace(
        s.health_check, **changes)) for s in model_.services)
    return dataclasses.replace(model_, services=services)


def _with_port(model_, index, target_port):
    services = list(model_.services)
    service = services[index]
    ports = (dataclasses.replace(service.ports[0], target_port=target_port),
             *service.ports[1:])
    services[index] = dataclasses.replace(service, ports=ports)
    return dataclasses.replace(model_, services=tuple(services))
