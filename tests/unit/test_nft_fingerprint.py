"""The nft target's apply record (dcnet.nft.fingerprint): round trip, lazy groups, and
unreadable records read as none (the plan then does the full read)."""

from __future__ import annotations

import pytest

from dcnet.nft import fingerprint, ruleset, synth

pytestmark = pytest.mark.unit


def test_a_record_round_trips_and_its_objects_equal_the_desired_state(tmp_path):
    want = ruleset.desired(synth.model(synth.model_text(3, 2, persistence=30)))
    grouped: dict = {}
    for ident, attrs in want.state.items():
        group = fingerprint.group_text(ruleset.group_of(ident))
        grouped.setdefault(group, []).append((ident, attrs))
    assert set(grouped) == {"", "tcp 10.128.0.1 80", "tcp 10.128.0.2 80", "tcp 10.128.0.3 80"}
    record = fingerprint.Record(7, "1:2", len(want.state),
                                {g: ("d" + g, fingerprint.encode(items))
                                 for g, items in grouped.items()})
    path = str(tmp_path / "sub" / "fingerprint-host")
    fingerprint.save(path, record)
    back = fingerprint.load(path)
    assert back == record
    decoded = {}
    for _digest, objects in back.groups.values():
        decoded.update(fingerprint.decode(objects))
    assert decoded == dict(want.state)
    assert fingerprint.count(back.groups) == len(want.state)
    fingerprint.remove(path)
    fingerprint.remove(path)                 # removing twice is fine
    assert fingerprint.load(path) is None


@pytest.mark.parametrize("text", ["", "not json\n", '{"genid": 1}\n',
                                  '{"genid": "x", "identity": "a", "objects": 1}\n',
                                  '{"genid": 1, "identity": "a", "objects": 1}\nno tabs\n'])
def test_an_unreadable_record_is_none(tmp_path, text):
    path = tmp_path / "fingerprint-host"
    path.write_text(text)
    assert fingerprint.load(str(path)) is None
