"""dcnet.nft.fastpath on this kernel: chain-only plans go as one raw netlink batch (no
``nft -f`` in the director's namespace) and leave exactly what ``nft -f`` would have: a
full read afterwards plans nothing. IPv4 and IPv6 VIPs, persistence (affinity set
lookups and updates), re-weight, a backend added, drained and removed; a batch the
kernel refuses applies nothing."""

from __future__ import annotations

import os

import pytest

from dcnet.nft import fastpath, synth
from dcnet.nft.nftio import Nft
from dcnet.target import apply_plan, make_plan, registry

pytestmark = pytest.mark.netns

V4, V6 = "198.51.100.74", "2001:db8:74::10"


def model(weights: dict[str, int]):
    v6 = {f"fd00:74::{a.rsplit('.', 1)[1]}": w for a, w in weights.items()}
    return synth.model(synth.lab_model_text(V4, weights, persistence=300,
                                            more=((V6, v6),)))


@pytest.fixture
def director(lab_factory, tmp_path):
    lab = lab_factory({"hosts": [{"name": "director"}]})
    return lab, {"netns": lab.netns("director"), "state_dir": str(tmp_path / "state")}


def full_read_plan(options, m):
    target = registry.create("nft", **options)
    if os.path.exists(target.fingerprint_path()):
        os.unlink(target.fingerprint_path())
    return target.plan(m)


def raw_apply(options, m, what: str):
    """Plan and apply ``m`` with nft -f forbidden: one raw batch; the plan."""
    target = registry.create("nft", **options)

    def no_nft(_text):
        raise AssertionError(f"nft -f ran for {what}")

    target.nft.run_script = no_nft
    with target.lock():
        plan = make_plan(target, m)
        assert plan.changes and fastpath.eligible(list(plan.changes), plan.payload.bodies)
        result = apply_plan(target, plan)
    assert result.ok and result.writes["nft_transactions"] == 1, result.to_text()
    return plan


def record_again(options, m) -> None:
    """An apply that records the generation again (after a full read's plan)."""
    target = registry.create("nft", **options)
    with target.lock():
        assert apply_plan(target, make_plan(target, m)).ok


def test_chain_changes_go_as_one_batch_and_read_back_as_planned(director):
    _lab, options = director
    first = model({"10.20.0.11": 3, "10.20.0.12": 2})
    target = registry.create("nft", **options)
    with target.lock():
        assert apply_plan(target, make_plan(target, first)).ok       # nft -f: new table
    steps = [model({"10.20.0.11": 1, "10.20.0.12": 2}),                  # re-weight
             model({"10.20.0.11": 1, "10.20.0.12": 2, "10.20.0.13": 1}),  # add a backend
             model({"10.20.0.11": 0, "10.20.0.12": 2, "10.20.0.13": 1}),  # drain one
             model({"10.20.0.12": 2, "10.20.0.13": 1})]                   # remove one
    for m in steps:
        raw_apply(options, m, "a chain-only plan")
        assert registry.create("nft", **options).plan(m).empty       # record path
        check = full_read_plan(options, m)                          # the kernel's view
        assert not check.payload.fast_path and check.empty, check.to_text()
        record_again(options, m)


def test_a_refused_batch_applies_nothing(director):
    lab, options = director
    m = model({"10.20.0.11": 1, "10.20.0.12": 1})
    target = registry.create("nft", **options)
    with target.lock():
        assert apply_plan(target, make_plan(target, m)).ok
    nft = Nft(options["netns"])
    target = registry.create("nft", **options)
    with target.lock():
        plan = make_plan(target, model({"10.20.0.11": 1}))     # deletes a backend chain
        assert fastpath.eligible(list(plan.changes), plan.payload.bodies)
        doomed = next(c for c in plan.changes if c.kind == "backend" and c.action == "delete")
        chain = "be-" + "-".join(str(p).replace(":", "_") for p in doomed.key)
        lab.run("director", ["nft", "add", "rule", "inet", "dcnet", "output", "jump", chain])
        before, genid = nft.raw_listing(), nft.genid()
        result = apply_plan(target, plan)
    assert not result.ok and result.applied == []
    assert "nothing of it applied" in str(result.error)
    assert nft.raw_listing() == before and nft.genid() == genid


def flat_model(weights: dict[str, int], more: bool = False):
    """The flat layout (no persistence): VIP:ports as map elements only."""
    v6 = {f"fd00:74::{a.rsplit('.', 1)[1]}": w for a, w in weights.items()}
    extra = ((V6, v6), *((("198.51.100.75", {"10.20.0.21": 1}),) if more else ()))
    return synth.model(synth.lab_model_text(V4, weights, more=extra))


def test_flat_element_changes_go_as_one_batch_and_read_back_as_planned(director):
    """Re-weight, a backend added, drained and removed, a VIP:port added and removed
    (its counters and counter-map elements too): raw element messages only, and a full
    read of the kernel's maps afterwards agrees."""
    _lab, options = director
    target = registry.create("nft", **options)
    with target.lock():
        assert apply_plan(target, make_plan(target, flat_model({"10.20.0.11": 3,
                                                               "10.20.0.12": 2}))).ok
    steps = [flat_model({"10.20.0.11": 1, "10.20.0.12": 2}),
             flat_model({"10.20.0.11": 1, "10.20.0.12": 2, "10.20.0.13": 1}),
             flat_model({"10.20.0.11": 0, "10.20.0.12": 2, "10.20.0.13": 1}),
             flat_model({"10.20.0.11": 0, "10.20.0.12": 0, "10.20.0.13": 0}),   # W 0
             flat_model({"10.20.0.12": 2, "10.20.0.13": 1}, more=True),        # VIP added
             flat_model({"10.20.0.12": 2, "10.20.0.13": 1})]                   # and gone
    kinds = set()
    for m in steps:
        plan = raw_apply(options, m, "an element-only plan")
        kinds |= {c.kind for c in plan.changes}
        check = full_read_plan(options, m)                          # the kernel's view
        assert not check.payload.fast_path and check.empty, check.to_text()
        record_again(options, m)
    assert kinds == {"flat", "counter", "tally"}
