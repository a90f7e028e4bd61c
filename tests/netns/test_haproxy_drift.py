"""The haproxy target's piecewise drift check (:mod:`dcnet.haproxy.drift`) against a real
HAProxy in a lab: the drift-check contract (tests/drift_contract.py: drifted() of the
model in pieces == not plan.empty) for the variants of an applied model of five
services over several pieces, before and after changes applied through the runtime API
(no reload) and through a reload; a model at the target is no drift, a change only a
reload carries and a slot changed behind dcnet's back are. The same on the fake:
tests/unit/test_haproxy_drift.py."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile

import pytest

from dcnet.haproxy.backend import HAProxyTarget
from dcnet.haproxy.paths import Paths
from dcnet.lab import haproxy_lab as hlab
from dcnet.model import pieces as model_pieces
from dcnet.target import apply_plan
from tests.drift_contract import assert_drift_agrees

pytestmark = pytest.mark.netns

RS1, RS2, RS3 = (hlab.server_address(i) for i in (1, 2, 3))
SERVICES = 5


def model(servers, services=SERVICES, **haproxy):
    return hlab.model_of(hlab.model_data(servers, services=services, **haproxy))


@pytest.fixture
def running(lab_factory):
    """HAProxy serving five services over rs1 and rs2 (rs2 drained); (target, options)."""
    workdir = tempfile.mkdtemp(prefix="dcnet-hapdrift-")
    try:
        lab = lab_factory(hlab.topology(3))
        paths = Paths(run_dir=f"{workdir}/run")
        hlab.start_haproxy(lab, model({RS1: 10, RS2: 0}), paths)
        yield HAProxyTarget(run_dir=paths.run_dir, log=lambda text: None), \
            {"run_dir": paths.run_dir}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def agrees(target, model_) -> bool:
    drifted = target.drifted(model_pieces.Pieces(model_pieces.pack(model_, 2)))
    assert drifted == (not target.plan(model_).empty)
    return drifted


def test_the_drift_contract_on_a_real_haproxy(running):
    target, options = running
    started = model({RS1: 10, RS2: 0})
    seen = assert_drift_agrees("haproxy", options, started, per_piece=2)
    assert len(seen) == 6 and not seen["as applied"]
    # applied through the runtime API: rs1 re-weighted, rs2 gone, rs3 in a free slot
    changed = model({RS1: 30, RS3: 5})
    plan = target.plan(changed)
    assert plan.notes[0] == f"{3 * SERVICES} runtime changes, 0 reloads"
    assert apply_plan(target, plan, force=True).ok
    assert target.runtime.reloads == 0
    assert_drift_agrees("haproxy", options, changed, per_piece=2)
    # a reload: a service more
    grown = model({RS1: 30, RS3: 5}, services=SERVICES + 1)
    plan = target.plan(grown)
    assert plan.notes[0].endswith(", 1 reloads")
    assert apply_plan(target, plan).ok
    assert_drift_agrees("haproxy", options, grown, per_piece=2)


def test_at_the_model_no_drift_a_reload_only_change_and_a_moved_slot_drift(running):
    target, _ = running
    at = model({RS1: 10, RS2: 0})
    assert not agrees(target, at)
    assert agrees(target, model({RS1: 10, RS2: 0}, timeout_connect=7))      # global
    checked = dataclasses.replace(at, services=tuple(
        dataclasses.replace(s, health_check=dataclasses.replace(s.health_check, interval=2))
        for s in at.services))
    assert agrees(target, checked)                                         # a service
    plan = target.plan(checked)
    assert plan.notes[0].endswith(", 1 reloads")
    assert apply_plan(target, plan, force=True).ok
    assert not agrees(target, checked)
    backend = f"{hlab.job_name(SERVICES - 1)}:{hlab.SERVICE_PORT + SERVICES - 1}"
    target.runtime.set_server(backend, "s1", weight=11)       # behind dcnet's back
    assert agrees(target, checked)
    target.runtime.set_server(backend, "s1", weight=10)
    assert not agrees(target, checked)
