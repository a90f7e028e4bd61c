"""Unit tests of the load test's pure parts (per-step numbers from replay results, the
SLO check, the steps, the report) and of the pool's address plan."""

from __future__ import annotations

import json

import pytest

from dcnet.mirror import loadtest, loadtest_report, pool, recording, replay
from dcnet.mirror.loadtest import Slo

pytestmark = pytest.mark.unit

HTTP = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n"
SESSIONS = [recording.Session("http", "c:1", "v:80", 0.0, chunks=(
                recording.Chunk(0, 0.0, HTTP),)),
            recording.Session("raw", "c:2", "v:80", 0.0, chunks=(
                recording.Chunk(0, 0.0, b"\x00\x01binary"),))]


def write_results(path, latencies: dict[str, list[float]]) -> str:
    with open(path, "w") as handle:
        for session_id, values in latencies.items():
            handle.write(json.dumps({"id": session_id, "latencies": values}) + "\n")
    return str(path)


def test_step_stats_count_unanswered_requests_and_failed_copies_as_errors(tmp_path):
    ok = write_results(tmp_path / "c0", {"http": [0.001, 0.002], "raw": [0.004]})
    half = write_results(tmp_path / "c1", {"http": [0.003], "raw": []})
    summary = {"copies": [{"copy": 0, "exit": 0, "out": ok},
                          {"copy": 1, "exit": 0, "out": half},
                          {"copy": 2, "exit": -15, "out": str(tmp_path / "missing")}]}
    stats = loadtest.step_stats(3.0, SESSIONS, summary, wall_s=2.0)
    # 3 requests a copy (two HTTP requests, one raw session), 3 copies
    assert (stats["requests"], stats["answered"], stats["errors"]) == (9, 4, 5)
    assert stats["error_share"] == pytest.approx(5 / 9, abs=1e-6)
    assert (stats["p50_ms"], stats["p99_ms"], stats["max_ms"]) == (2.0, 4.0, 4.0)
    assert stats["throughput_rps"] == 2.0


def test_breaches_name_each_broken_objective():
    base = {"p99_ms": 5.0, "error_share": 0.0, "answered": 10, "requests": 10}
    assert loadtest.breaches(base, Slo(5.0, 0.0)) == []
    assert loadtest.breaches(base, Slo(4.9, 0.0)) == ["p99 5.0 ms > 4.9 ms"]
    failing = {**base, "error_share": 0.02}
    assert loadtest.breaches(failing, Slo(10, 0.01)) == ["errors 2.00% > 1.00%"]
    nothing = {"p99_ms": None, "error_share": 1.0, "answered": 0, "requests": 4}
    assert loadtest.breaches(nothing, Slo(10, 1.0)) == ["no request answered"]


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert loadtest.percentile(values, 99) == 99.0
    assert loadtest.percentile(values, 50) == 50.0
    assert loadtest.percentile([7.0], 99) == 7.0
    assert loadtest.percentile([], 99) is None


def test_steps_must_rise_within_the_factor_range():
    assert loadtest.check_steps([1, 2, 5]) == [1.0, 2.0, 5.0]
    for bad in ([], [2, 1], [1, 1], [0.01], [1, 200]):
        with pytest.raises(ValueError):
            loadtest.check_steps(bad)
    assert [replay.copy_count(f) for f in (0.1, 1, 2.5, 10, 100)] == [1, 1, 3, 10, 100]


def test_report_states_the_breaking_point(tmp_path):
    step = {"factor": 1.0, "copies": 1, "requests": 10, "answered": 10, "errors": 0,
            "error_share": 0.0, "p50_ms": 1.0, "p99_ms": 2.0, "max_ms": 2.0, "wall_s": 1.0,
            "throughput_rps": 10.0, "breaches": []}
    broken = {**step, "factor": 2.0, "copies": 2, "p99_ms": 50.0,
              "breaches": ["p99 50.0 ms > 10.0 ms"]}
    report = {"recording": "r", "target": "t:1", "slo": {"p99_ms": 10.0, "errors": 0.01},
              "steps_planned": [1.0, 2.0, 5.0], "sessions": 5, "concurrency_per_copy": 16,
              "steps": [step, broken], "breaking_step": 2.0, "last_passing_step": 1.0,
              "reasons": broken["breaches"]}
    assert "broke at x2: p99 50.0 ms > 10.0 ms. Last step that held: x1." in \
        loadtest_report.verdict(report)
    text = loadtest_report.markdown(report)
    assert "| x2 | 2 | 10 | 10 | 0 | 0.00% | 1 | 50 | 2 | 1 | 10 | p99 50.0 ms" in text
    held = {**report, "steps": [step], "breaking_step": None, "reasons": []}
    assert "held at every step, up to x1" in loadtest_report.verdict(held)
    paths = loadtest_report.write(report, str(tmp_path))
    with open(paths[0]) as handle:
        assert json.load(handle)["breaking_step"] == 2.0
    with open(paths[2], "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_pool_addresses_skip_reserved_ones_and_keep_the_prefix():
    assert pool.addresses("10.95.0.0/16", 3, ["10.95.0.1"]) == \
        ["10.95.0.2/16", "10.95.0.3/16", "10.95.0.4/16"]
    assert pool.addresses("10.9.0.0/30", 2) == ["10.9.0.1/30", "10.9.0.2/30"]
    with pytest.raises(pool.PoolError):
        pool.addresses("10.9.0.0/30", 3)
    assert pool.names("dmrabcde", 2) == ["dmrabcde-0", "dmrabcde-1"]
