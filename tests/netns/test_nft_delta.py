"""The nft target's one-service plan: only the services that are not the same objects
as in the previous plan are built, digested and compared with the apply record
(:func:`dcnet.nft.inputcache.inputs_delta`, ``NftTarget._candidates``); the others are
trusted from the record only while this process knows the record agrees with them.
Every plan's outcome equals a full read's."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from dcnet.nft import fingerprint, inputcache, ruleset
from dcnet.target import apply_plan, make_plan, registry

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from nft_apply import model_for

pytestmark = pytest.mark.netns

SERVICES = 30


@pytest.fixture
def director(lab_factory, tmp_path):
    lab = lab_factory({"hosts": [{"name": "director"}]})
    inputcache.clear()
    return {"netns": lab.netns("director"), "state_dir": str(tmp_path / "state")}


@pytest.fixture
def digested(monkeypatch):
    """The VIP:ports whose inputs a plan digests (compares with the record)."""
    seen: list = []
    real = inputcache.digest

    def spy(value):
        seen.append(value.key3)
        return real(value)

    monkeypatch.setattr(inputcache, "digest", spy)
    return seen


def swap(model, index: int, other):
    """``model`` with service ``index`` replaced by ``other``'s (the rest: same objects)."""
    services = list(model.services)
    services[index] = other.services[index]
    return dataclasses.replace(model, services=tuple(services))


def key_of(model, index: int) -> tuple:
    return next(iter(ruleset.inputs(SimpleNamespace(services=(model.services[index],)))[0]))


def sync(options, model, apply: bool = True):
    target = registry.create("nft", **options)
    with target.lock():
        plan = make_plan(target, model)
        if apply:
            assert apply_plan(target, plan, force=True).ok
    return plan


def groups(plan) -> set:
    return {tuple(c.key[:3]) for c in plan.changes}


def full_read_plan(options, model):
    target = registry.create("nft", **options)
    if os.path.exists(target.fingerprint_path()):
        os.unlink(target.fingerprint_path())
    return target.plan(model)


def test_one_changed_service_is_the_only_one_read_and_written(director, digested):
    base = model_for(SERVICES, 3)
    changed = model_for(SERVICES, 3, changed=True)
    sync(director, base)                                    # full read, then the record
    sync(director, base)                                    # fast path: compares all once
    one = swap(base, 0, changed)
    digested.clear()
    plan = sync(director, one)
    assert digested == [key_of(one, 0)]
    assert plan.payload.fast_path and groups(plan) == {key_of(one, 0)}
    digested.clear()
    assert sync(director, one).empty and digested == []    # apply twice: a no-op
    assert full_read_plan(director, one).empty              # equals a full apply
    back = sync(director, base)                             # and back
    assert groups(back) == {key_of(base, 0)} and full_read_plan(director, base).empty


def test_an_unapplied_plan_keeps_its_services_pending(director, digested):
    base = model_for(SERVICES, 3)
    changed = model_for(SERVICES, 3, changed=True)
    sync(director, base)
    sync(director, base)
    one = swap(base, 0, changed)
    assert groups(sync(director, one, apply=False)) == {key_of(one, 0)}
    other = model_for(SERVICES, 4)                          # service 5: a fourth backend
    two = swap(one, 5, other)
    digested.clear()
    plan = sync(director, two)                              # service 0 is still pending
    assert sorted(digested) == sorted([key_of(two, 0), key_of(two, 5)])
    assert groups(plan) == {key_of(two, 0), key_of(two, 5)}
    assert full_read_plan(director, two).empty


def test_a_record_this_process_did_not_write_is_compared_whole(director, digested):
    base = model_for(SERVICES, 3)
    changed = model_for(SERVICES, 3, changed=True)
    sync(director, base)
    sync(director, base)
    fingerprint._memo.clear()                   # as if another process wrote the record
    digested.clear()
    plan = sync(director, swap(base, 0, changed))
    assert len(set(digested)) == SERVICES and groups(plan) == {key_of(base, 0)}
    removed = dataclasses.replace(base, services=base.services[1:])
    digested.clear()
    plan = sync(director, removed)              # one service gone: a walk, one group
    assert digested == [] and groups(plan) == {key_of(base, 0)}
    assert all(c.action.value == "delete" for c in plan.changes)
    assert full_read_plan(director, removed).empty


def test_a_chain_state_seen_before_is_not_compiled_again(director, monkeypatch):
    from dcnet.nft import fastpath

    base = model_for(SERVICES, 3)
    one = swap(base, 0, model_for(SERVICES, 3, changed=True))
    for m in (base, one, base):
        sync(director, m)
    compiled = []
    real = fastpath.compile_rules
    monkeypatch.setattr(fastpath, "compile_rules", lambda *a: compiled.append(a) or real(*a))
    plan = sync(director, one)                  # service 0's chain as it was two applies ago
    assert groups(plan) == {key_of(one, 0)} and compiled == []
    assert full_read_plan(director, one).empty
