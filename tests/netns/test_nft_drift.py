"""The nft target's drift check a piece of the model at a time (dcnet.nft.drift) on this
kernel: for a table applied from a model of flat, weight-pattern, persistent (chained)
and Maglev VIP:ports over several pieces, it answers what the plan says for the model
and for variants of it (tests/drift_contract.py) without a full read; a hand edit of
the table (the generation moved) and a foreign table's commit go to the whole plan,
which sees the edit and ignores the foreign table, and which, finding the table at the
model, records it so the next check goes piecewise again."""

from __future__ import annotations

import dataclasses

import pytest

from dcnet.model import pieces as model_pieces
from dcnet.nft import drift, synth
from dcnet.target import registry, session
from tests.drift_contract import assert_drift_agrees

pytestmark = pytest.mark.netns


def mixed_model():
    """9 services of 3 servers: flat equal weights, uneven weights (a pattern),
    persistence (chained), Maglev, in turn."""
    model = synth.model(synth.model_text(9, 3))
    services = []
    for i, s in enumerate(model.services):
        port = s.ports[0]
        if i % 4 == 1:
            s = dataclasses.replace(s, real_servers=tuple(
                dataclasses.replace(r, weight=j + 1) for j, r in enumerate(s.real_servers)))
        elif i % 4 == 2:
            s = dataclasses.replace(s, ports=(dataclasses.replace(port, persistence=300),))
        elif i % 4 == 3:
            s = dataclasses.replace(s, ports=(dataclasses.replace(port, scheduler="mh"),))
        services.append(s)
    return dataclasses.replace(model, services=tuple(services))


@pytest.fixture
def director(lab_factory, tmp_path):
    lab = lab_factory({"hosts": [{"name": "director"}]})
    return lab, {"netns": lab.netns("director"), "state_dir": str(tmp_path / "state")}


def pieces_of(model, per_piece: int = 2):
    return model_pieces.Pieces(model_pieces.pack(model, per_piece))


def test_the_piecewise_check_answers_as_the_plan(director):
    _lab, options = director
    model = mixed_model()
    assert session.run("nft", model, options, apply=True).ok
    seen = assert_drift_agrees("nft", options, model, per_piece=2)
    assert not seen["as applied"]
    target = registry.create("nft", **options)
    with target.lock():             # the record vouches for the namespace: no full read
        assert drift.drifted(target, pieces_of(model)) is False
        gone = dataclasses.replace(model, services=model.services[:-1])
        assert drift.drifted(target, pieces_of(gone)) is True


def test_a_changed_input_with_the_same_objects_is_no_drift(director, monkeypatch):
    """A VIP:port whose inputs digest differently but build the objects the record
    holds: the plan has no change, so neither has the drift check."""
    _lab, options = director
    model = mixed_model()
    assert session.run("nft", model, options, apply=True).ok
    from dcnet.nft import ruleset
    real = ruleset.ServiceInput.digest
    monkeypatch.setattr(ruleset.ServiceInput, "digest", lambda s: "x" + real(s))
    assert session.run("nft", model, options, apply=False).plan.empty
    target = registry.create("nft", **options)
    with target.lock():
        assert drift.drifted(target, pieces_of(model)) is False


def test_a_hand_edit_and_a_foreign_commit_go_to_the_whole_plan(director):
    lab, options = director
    model = mixed_model()
    assert session.run("nft", model, options, apply=True).ok
    lab.run("director", ["nft", "add table inet other"])          # the generation moves
    target = registry.create("nft", **options)
    with target.lock():
        assert drift.drifted(target, pieces_of(model)) is None     # the record is stale
    assert session.drifted("nft", pieces_of(model), options) is False
    with target.lock():             # that full read recorded the table at this generation
        assert drift.drifted(target, pieces_of(model)) is False
    lab.run("director", ["nft", "flush chain inet dcnet lb4"])     # a hand edit
    assert session.drifted("nft", pieces_of(model), options) is True
    assert not session.run("nft", model, options, apply=False).plan.empty
