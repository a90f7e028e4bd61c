"""Values an ELB agent reads from etcd, written by a hostile service credential (issue #15).

A service's credential may write anything under its own JOBNAME's backend keys. Every
such value (not JSON, not UTF-8, huge, nested 100,000 deep, wrong types, a weight out of
range or a boolean, unknown fields) and every such key (not ``ADDR[:PORT]``, huge, not
UTF-8) is skipped by the agent's desired state with one problem naming the key
(shortened, escaped), the other backends and services unaffected; the effective model
the director applies is built without error; the problems kept are bounded. The decoders
of the other documents refuse garbage the same way (a zlib bomb as a model payload stops
at ``MAX_PAYLOAD``).
"""

from __future__ import annotations

import base64
import json
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcnet.elbstore import records
from dcnet.elbstore.desired import MAX_PROBLEMS, DesiredState
from dcnet.elbstore.effective import effective_model
from dcnet.elbstore.keys import Keys
from dcnet.elbstore.records import (
    ModelRevision,
    RecordError,
    Status,
    decode_current,
    encode_current,
    encode_entry,
)
from dcnet.sysio.etcd import Event, KeyValue
from tests.unit.model_fixtures import JOB_A, JOB_B
from tests.unit.test_elbstore import record, the_model

pytestmark = pytest.mark.unit

KEYS = Keys()
GOOD = encode_entry({"weight": 7, "state": "active"})

BAD_VALUES = {
    "not JSON": b"nonsense",
    "not UTF-8": b'{"weight": 1, "state": "\xff"}',
    "nested 100,000 deep": b'{"weight": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "1 MiB string": json.dumps({"weight": 1, "state": "x" * (1 << 20)}).encode(),
    "5,000-digit weight": b'{"weight": 1' + b"0" * 5000 + b', "state": "active"}',
    "a list": b"[1, 2]",
    "a string": b'"active"',
    "null": b"null",
    "weight a string": b'{"weight": "7", "state": "active"}',
    "weight a boolean": b'{"weight": true, "state": "active"}',
    "weight negative": b'{"weight": -1, "state": "active"}',
    "weight 65536": b'{"weight": 65536, "state": "active"}',
    "weight a float": b'{"weight": 1.5, "state": "active"}',
    "weight NaN": b'{"weight": NaN, "state": "active"}',
    "unknown state": b'{"weight": 1, "state": "pwned"}',
    "state a list": b'{"weight": 1, "state": ["active"]}',
    "no state": b'{"weight": 1}',
    "empty": b"",
}
BAD_IDENTS = {
    "a name": "evil.example",
    "a path": "../../current",
    "port 0": "10.0.0.9:0",
    "port 70000": "10.0.0.9:70000",
    "10,000 characters": "1" * 10_000,
    "not UTF-8": b"10.0.0.\xff".decode("utf-8", "surrogateescape"),
    "two colons, not v6": "10.0.0.9:80:80",
}


def put(key: str, value: bytes, rev: int) -> Event:
    return Event("put", KeyValue(key, value, rev, rev, 1, 0))


def loaded() -> DesiredState:
    state = DesiredState(KEYS)
    state.load_snapshot(KeyValue(KEYS.current, encode_current(1).encode(), 2, 2, 1, 0),
                        KeyValue(KEYS.model(1), record(1).encode().encode(), 2, 2, 1, 0),
                        [KeyValue(KEYS.backend(JOB_B, "10.0.0.5"), GOOD.encode(), 1, 1, 1, 0)],
                        2)
    return state


def effective_servers(state: DesiredState) -> dict:
    model = effective_model(the_model(), state.registry)
    return {s.name: sorted((str(r.address), r.weight) for r in s.real_servers)
            for s in model.services}


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_garbage_backend_value_is_skipped_and_named(name):
    state = loaded()
    before = effective_servers(state)
    key = KEYS.backend(JOB_A, "10.0.0.9")
    assert not state.apply_events(3, [put(key, BAD_VALUES[name], 3)])
    assert state.registry == {JOB_B: {"10.0.0.5": {"weight": 7, "state": "active"}}}
    (problem,) = state.problems
    assert problem.startswith(f"{key}: not a backend entry: ") and len(problem) < 600
    assert effective_servers(state) == before


def test_garbage_over_a_good_entry_keeps_the_good_one():
    state = loaded()
    key = KEYS.backend(JOB_B, "10.0.0.5")
    assert not state.apply_events(3, [put(key, b'{"weight": true, "state": "active"}', 3)])
    assert state.registry[JOB_B] == {"10.0.0.5": {"weight": 7, "state": "active"}}


@pytest.mark.parametrize("name", sorted(BAD_IDENTS))
def test_backend_key_that_is_not_an_address_is_skipped(name):
    state = loaded()
    before = effective_servers(state)
    key = KEYS.backends + f"{JOB_A}/{BAD_IDENTS[name]}"
    assert not state.apply_events(3, [put(key, GOOD.encode(), 3)])
    assert JOB_A not in state.registry
    (problem,) = state.problems
    assert "not a backend key" in problem and len(problem) < 600
    problem.encode("utf-8")        # printable as it is (no lone surrogates)
    assert effective_servers(state) == before     # before: this raised in converge


def test_unknown_fields_are_ignored():
    state = loaded()
    value = json.dumps({"weight": 3, "state": "active", "by": ["x"], "evil": {"a": 1}})
    assert state.apply_events(3, [put(KEYS.backend(JOB_A, "10.0.0.9:8080"), value.encode(),
                                      3)])
    assert state.registry[JOB_A] == {"10.0.0.9:8080": {"weight": 3, "state": "active"}}
    assert state.problems == []


def test_problems_kept_are_bounded():
    state = loaded()
    events = [put(KEYS.backend(JOB_A, f"10.0.{i // 250}.{i % 250 + 1}"), b"x", 3 + i)
              for i in range(1000)]
    state.apply_events(1003, events)
    assert len(state.problems) == MAX_PROBLEMS
    assert "10.0.3.250" in state.problems[-1]


@pytest.mark.parametrize("value", [b"nonsense", b'{"revision": true}', b'{"revision": "1"}',
                                   b"[" * 100_000, b'{"revision": -3}', b"\xff"])
def test_garbage_current_pointer_is_refused(value):
    with pytest.raises(RecordError, match=r"^/k: not a current-revision pointer"):
        decode_current(value, "/k")


def test_zlib_bomb_payload_stops_at_the_limit(monkeypatch):
    monkeypatch.setattr(records, "MAX_PAYLOAD", 1 << 20)
    bomb = base64.b64encode(zlib.compress(b"[" + b" " * (8 << 20) + b"]", 9)).decode()
    doc = json.dumps({"format": 1, "revision": 1, "payload": bomb})
    with pytest.raises(RecordError, match="inflates past 1048576 bytes"):
        ModelRevision.decode(doc, "/k")


@pytest.mark.parametrize("value", [b"[" * 100_000, b'{"errors": 5', b"\xff\xfe", b"7"])
def test_garbage_status_is_refused(value):
    with pytest.raises(RecordError, match=r"^/k: not a director status"):
        Status.decode(value, "/k")


# ---------------------------------------------------------------- property (CI short, bench long)


def _json_values():
    leaves = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) |
              st.text(max_size=20))
    return st.recursive(leaves, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
        st.sampled_from(["weight", "state", "by", "at"]) | st.text(max_size=5), kids,
        max_size=4), max_leaves=12)


def backend_puts():
    """``IDENT\\nVALUE`` bytes: a backend key's last part and the value put there."""
    values = _json_values()
    docs = st.fixed_dictionaries({"weight": values | st.integers(-2, 70000),
                                  "state": st.sampled_from(["active", "draining", "removed",
                                                            "x"]) | values}) | values
    value = docs.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=300)
    ident = st.sampled_from(["10.0.0.9", "10.0.0.9:8080", "[2001:db8::1]:80", "10.0.0.9:0"]) | \
        st.text(max_size=30).filter(lambda t: "\n" not in t)
    return st.tuples(ident, value).map(
        lambda pair: pair[0].encode("utf-8", "surrogatepass") + b"\n" + pair[1])


def put_outcome(data: bytes) -> object:
    """The effective model's servers after one hostile put (or the exception)."""
    ident, _, value = data.partition(b"\n")
    state = loaded()
    key = KEYS.backends + f"{JOB_A}/" + ident.decode("utf-8", "surrogateescape")
    state.apply_events(3, [put(key, value, 3)])
    for problem in state.problems:
        assert problem.startswith(KEYS.backends[:20]), problem
        problem.encode("utf-8")
    return effective_servers(state)


def check_put_outcome(outcome: object) -> None:
    assert not isinstance(outcome, BaseException), f"{type(outcome).__name__}: {outcome}"


@settings(max_examples=150, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(backend_puts())
def test_any_put_leaves_a_model_the_director_can_apply(data):
    check_put_outcome(put_outcome(data))
