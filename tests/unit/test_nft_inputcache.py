"""dcnet.nft.inputcache gives what dcnet.nft.ruleset.inputs gives, memo or not."""

import dataclasses
import ipaddress
import sys
from pathlib import Path

from dcnet.nft import inputcache, ruleset

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from nft_apply import model_for


def with_dr_port(model):
    s = model.services[1]
    port = dataclasses.replace(s.ports[0], forward=type(s.ports[0].forward)("dr"), port=81)
    return dataclasses.replace(model, services=(model.services[0],
                                                dataclasses.replace(s, ports=(*s.ports, port)),
                                                *model.services[2:]))


def test_memo_by_identity_and_by_value_equals_the_plain_inputs():
    inputcache.clear()
    base = with_dr_port(model_for(200, 3))
    changed = model_for(200, 3, changed=True)
    one = dataclasses.replace(base, services=(changed.services[0], *base.services[1:]))
    for model in (base, base, one, with_dr_port(model_for(200, 3)), changed):
        assert inputcache.inputs(model) == ruleset.inputs(model)
    marks = {"lab": 101}
    assert inputcache.inputs(base, marks=marks) == ruleset.inputs(base, marks=marks)
    registry = {base.services[3].name: {"172.16.0.10": {"state": "draining", "weight": 0},
                                         "172.16.9.9": {"state": "active", "weight": 2}}}
    assert (inputcache.inputs(base, registry, 65537, marks)
            == ruleset.inputs(base, registry, 65537, marks))
    assert inputcache.inputs(base, maglev_size=7) == ruleset.inputs(base, maglev_size=7)


def test_a_changed_service_gets_new_inputs_and_digests():
    inputcache.clear()
    base, changed = model_for(50, 4), model_for(50, 4, changed=True)
    one = dataclasses.replace(base, services=(changed.services[0], *base.services[1:]))
    before, _ = inputcache.inputs(base)
    after, _ = inputcache.inputs(one)
    key = ("tcp", str(ipaddress.ip_address("10.0.0.1")), 80)
    assert inputcache.digest(before[key]) != inputcache.digest(after[key])
    assert [k for k in before if before[k] != after[k]] == [key]
    assert all(inputcache.digest(after[k]) == after[k].digest() for k in after)


def test_the_record_journal_replays_deltas_and_refuses_what_does_not_follow(tmp_path):
    from dcnet.nft import fingerprint as fp

    path = str(tmp_path / "fingerprint-x")
    base = fp.Record(5, "1:2", 10, {"": ("i", "[]"), "tcp 10.0.0.1 80": ("a", "[1]"),
                                     "tcp 10.0.0.2 80": ("b", "[2]")})
    fp.save(path, base)
    step = fp.Record(6, "1:2", 9, {"": ("i", "[]"), "tcp 10.0.0.1 80": ("c", "[3]")})
    fp.append(path, base, step, {"tcp 10.0.0.1 80": ("c", "[3]"), "tcp 10.0.0.2 80": None})
    fp._memo.clear()                                   # another process reads it
    assert fp.load(path) == step
    with open(path + fp.JOURNAL, "a") as fh:
        fh.write('{"from": 6, "genid": 7')            # a torn line: stays at 6
    fp._memo.clear()
    assert fp.load(path).genid == 6
    with open(path + fp.JOURNAL, "w") as fh:
        fh.write('{"from":4,"genid":6,"identity":"1:2","objects":1,"groups":{}}\n')
    fp._memo.clear()
    assert fp.load(path) is None                       # does not follow from genid 5
    fp.save(path, step)                                # a rewrite drops the journal
    assert not (tmp_path / "fingerprint-x.log").exists() and fp.load(path) == step


def test_the_delta_names_only_the_services_that_are_not_the_same_objects(monkeypatch):
    inputcache.clear()
    base, changed = model_for(100, 3), model_for(100, 3, changed=True)
    _found, _notes, first = inputcache.inputs_delta(base)
    assert first.keys is None and first.before == ""          # nothing to compare with
    built = []
    real = ruleset.inputs
    monkeypatch.setattr(ruleset, "inputs", lambda m, *a: built.append(m) or real(m, *a))
    one = dataclasses.replace(base, services=(changed.services[0], *base.services[1:]))
    found, notes, delta = inputcache.inputs_delta(one)
    key = ("tcp", "10.0.0.1", 80)
    assert delta.before == first.after and delta.keys == {key}
    assert [m.services for m in built] == [(changed.services[0],)]   # one service built
    monkeypatch.setattr(ruleset, "inputs", real)
    assert (found, notes) == ruleset.inputs(one)
    shorter = dataclasses.replace(one, services=one.services[1:])    # the head removed
    found, notes, delta = inputcache.inputs_delta(shorter)
    assert delta.keys == {key} and (found, notes) == ruleset.inputs(shorter)
    found, _notes, delta = inputcache.inputs_delta(shorter, maglev_size=7)
    assert delta.keys == set(found)                               # every input is new
    twice = dataclasses.replace(base, services=(*base.services, base.services[0]))
    _found, _notes, delta = inputcache.inputs_delta(twice)      # a VIP:port of two services
    assert delta.keys is None


def test_services_added_or_removed_are_the_delta_without_a_walk(monkeypatch):
    """A service added (at the end, in the middle) or removed: only it is built and named,
    found by the longest common head and tail of identical objects; results equal the
    plain inputs every time."""
    inputcache.clear()
    base = model_for(100, 3)
    extra = model_for(102, 3).services[100:]
    inputcache.inputs_delta(base)
    walked = []
    real_walk = inputcache._walk
    monkeypatch.setattr(inputcache, "_walk", lambda *a: walked.append(a) or real_walk(*a))
    steps = [(*base.services, extra[0]),                              # one appended
             (*base.services[:50], extra[1], *base.services[50:], extra[0]),  # one inserted
             (*base.services[:50], *base.services[50:], extra[0]),    # and removed again
             base.services,                                           # the last removed
             base.services[:-3]]                                      # three removed
    for services in steps:
        model = dataclasses.replace(base, services=services)
        found, notes, delta = inputcache.inputs_delta(model)
        assert (found, notes) == ruleset.inputs(model)
        assert delta.keys is not None and len(delta.keys) in (1, 3), delta.keys
    assert walked == []
    assert {k[1] for k in delta.keys} == {"10.0.97.1", "10.0.98.1", "10.0.99.1"}
