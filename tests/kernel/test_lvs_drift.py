"""The LVS target's piecewise drift check (dcnet.lvs.drift) against the real IPVS and
routing of a director namespace, in the kernel lab, in-process: the drift contract
(tests/drift_contract.py: drifted() == not plan.empty for the applied model of six
services and variants of it, in pieces of one and two services), answered piecewise at
the model; a weight edited and a dest deleted with ipvsadm, a VIP address and a rule
deleted with ip: each seen as the plan sees it, and no drift once applied again."""

from __future__ import annotations

import subprocess

import pytest

from dcnet.lvs import drift
from dcnet.lvs.backend import LVSTarget
from dcnet.model import pieces as model_pieces
from dcnet.target import session
from tests.drift_contract import assert_drift_agrees
from tests.kernel.test_lvs import drop_netns, scratch_netns
from tests.unit.test_lvs_incremental import model_for, vip_of

# pyroute2's sockets left to the garbage collector in the guest (as in test_lvs.py)
pytestmark = [pytest.mark.kernel, pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

N = 6               # services (one VIP each, tcp/80 NAT, 3 real servers)


@pytest.fixture
def director(tmp_path):
    """(namespace, lvs options): elb0 and the carrier's uplink up0 (192.0.2.2/24)."""
    ns = scratch_netns("drift")
    try:
        for dev in ("elb0", "up0"):
            subprocess.run(["ip", "-n", ns, "link", "add", dev, "up", "type", "dummy"],
                           check=True)
        subprocess.run(["ip", "-n", ns, "addr", "add", "192.0.2.2/24", "dev", "up0"],
                       check=True)
        yield ns, {"netns": ns, "state_dir": str(tmp_path / "lvs-state")}
    finally:
        drop_netns(ns)


def in_pieces(model, per_piece: int = 1):
    return model_pieces.Pieces(model_pieces.pack(model, per_piece))


def piecewise(options: dict, model) -> bool | None:
    """The piecewise check's own answer (None: it would plan the whole model)."""
    target = LVSTarget(**options)
    try:
        return drift.drifted(target, in_pieces(model))
    finally:
        target.close()


def apply(options: dict, model) -> None:
    outcome = session.run("lvs", model, options, apply=True)
    assert outcome.result.ok, outcome.result.to_text()


def drifts_as_planned(options: dict, model) -> bool:
    drifted = session.drifted("lvs", in_pieces(model, 2), options)
    assert drifted == (not session.run("lvs", model, options, apply=False).plan.empty)
    return drifted


def test_the_drift_contract_in_pieces(director):
    _ns, options = director
    model = model_for(N)
    apply(options, model)
    assert piecewise(options, model) is False          # answered a piece at a time
    for per_piece in (1, 2):
        assert_drift_agrees("lvs", options, model, per_piece=per_piece)


def test_hand_changes_are_seen_as_the_plan_sees_them(director):
    ns, options = director
    model = model_for(N)
    apply(options, model)
    service = f"{vip_of(1)}:80"                         # its servers 172.16.0.4-6:8080
    hand_changes = [
        ["ipvsadm", "-e", "-t", service, "-r", "172.16.0.5:8080", "-m", "-w", "9"],
        ["ipvsadm", "-d", "-t", service, "-r", "172.16.0.6:8080"],
        ["ip", "addr", "del", f"{vip_of(3)}/32", "dev", "elb0"],
        ["ip", "rule", "del", "from", vip_of(4), "priority", "20000"],
    ]
    for argv in hand_changes:
        subprocess.run(["ip", "netns", "exec", ns, *argv], check=True)
        assert drifts_as_planned(options, model), argv
        apply(options, model)
        assert not drifts_as_planned(options, model), argv
        assert piecewise(options, model) is False, argv
