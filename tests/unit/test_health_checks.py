"""Health checks run by dcnet (pure parts): which checks a model asks for, rise/fall,
the state file's errors, and the nft target's weights for checks that are down."""

from __future__ import annotations

import json

import pytest

from dcnet.health import state
from dcnet.health.checks import Board, CheckKey, Timing, Tracker, checks_of, key_of
from dcnet.model.types import CheckType, HealthCheck
from dcnet.nft import ruleset, synth

pytestmark = pytest.mark.unit
SERVERS = {"10.20.0.11": 1, "10.20.0.12": 2}


def lab_model(check: str):
    text = synth.lab_model_text("198.51.100.74", SERVERS, target_port=8080)
    return synth.model(text.replace("    real_servers:\n",
                                    f"    health_check: {check}\n    real_servers:\n"))


def test_keys_name_what_is_probed():
    http = HealthCheck(type=CheckType.HTTP, path="/healthz", expect_status=204)
    assert key_of(http, "10.0.0.1", 8080).text == "http 10.0.0.1:8080/healthz 204"
    assert key_of(HealthCheck(port=9000), "fd00::1", 8080).text == "tcp [fd00::1]:9000"
    assert key_of(HealthCheck(type=CheckType.NONE), "10.0.0.1", 80) is None


def test_a_model_asks_one_check_per_real_server_port():
    found = checks_of(lab_model("{type: tcp, interval: 2, timeout: 1, rise: 3, fall: 4}"))
    assert set(found) == {CheckKey("tcp", a, 8080) for a in SERVERS}
    assert set(found.values()) == {Timing(2.0, 1.0, 3, 4)}
    assert checks_of(lab_model("{type: none}")) == {}


def test_down_after_fall_failures_up_after_rise_successes():
    t = Tracker(Timing(1, 1, rise=2, fall=3))
    assert [t.record(False) for _ in range(3)] == [False, False, True] and not t.up
    assert t.record(True) is False and t.record(False) is False     # the streak restarts
    assert [t.record(True) for _ in range(2)] == [False, True] and t.up
    assert t.probes == 7


def test_a_new_model_keeps_the_state_of_kept_checks():
    a, b = CheckKey("tcp", "10.0.0.1", 80), CheckKey("tcp", "10.0.0.2", 80)
    timing = Timing(1, 1, 1, 1)
    board = Board()
    board.sync({a: timing})
    board.trackers[a].record(False)
    assert board.down() == {a} and board.settled()
    board.sync({a: timing, b: timing})
    assert board.down() == {a} and not board.settled()      # b is new: not probed yet


def test_the_state_file_round_trips_and_errors_name_the_file(tmp_path):
    path = state.path_of(str(tmp_path), "ns1")
    assert path.endswith("health-ns1.json") and state.read_down(path) == frozenset()
    state.write(path, {"tcp 10.0.0.1:80": "Connection refused"})
    assert state.read_down(path) == {"tcp 10.0.0.1:80"}
    for text in ("{", json.dumps({"version": 9, "down": {}}), "[]"):
        with open(path, "w") as handle:
            handle.write(text)
        with pytest.raises(state.HealthFileError, match=path):
            state.read_down(path)


def test_the_nft_inputs_give_weight_0_to_servers_whose_check_is_down():
    m = lab_model("{type: http, path: /id}")
    down = frozenset({"http 10.20.0.12:8080/id 200"})
    healthy, _ = ruleset.inputs(m)
    found, notes = ruleset.inputs(m, down=down)
    (key3,) = found
    assert [(b.key[3], b.weight) for b in found[key3].backends] == [
        ("10.20.0.11", 1), ("10.20.0.12", 0)]
    assert "1 backend(s) at weight 0: health check down" in notes
    assert found[key3].digest() != healthy[key3].digest()      # the fast path sees it
    other = frozenset({"tcp 10.20.0.12:8080"})                 # another check: not ours
    assert ruleset.inputs(m, down=other)[0][key3].digest() == healthy[key3].digest()
