"""Netns tests of replay source pools and the load test (issue #19): ``elbctl mirror
replay --pool CIDR --via BRIDGE`` makes one namespace and one source address per copy on
a lab bridge, every copy's requests come from its own address, and nothing of the pool
(namespace, bridge port, address) is left after the run, after a refused target, after
SIGINT/SIGTERM mid-run; ``elbctl mirror loadtest`` ramps the factor until an SLO breaks
(deliberately tiny SLO, a target stopped between steps) and writes its report."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from dcnet.cli.elbctl import cli
from dcnet.lab.mirror_service import read_log, request_bytes
from dcnet.mirror import loadtest, pool, recording
from dcnet.sysio import netns as netns_mod

pytestmark = pytest.mark.netns

PY = sys.executable
TARGET, PORT, CLOSED_PORT, SINK_PORT = "10.95.0.1", 8080, 8081, 8082
POOL = "10.95.0.0/16"
SESSIONS, REQUESTS = 6, 2

SINK = """
import socket, sys, threading
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])))
def hold(conn):
    while conn.recv(65536):
        pass
while True:
    threading.Thread(target=hold, args=(srv.accept()[0],), daemon=True).start()
"""


def topology(log_dir: str) -> dict:
    serve = [PY, "-m", "dcnet.lab.mirror_service", "--port", str(PORT), "--log",
             f"{log_dir}/target.log"]
    return {
        "hosts": ["sw", "target"],
        "bridges": [{"name": "br0", "host": "sw"}],
        "links": [{"a": {"host": "target", "ifname": "eth0", "addresses": [f"{TARGET}/16"]},
                   "b": {"host": "sw", "ifname": "p-t", "bridge": "br0"}}],
        "processes": [
            {"name": "target", "host": "target", "argv": serve, "ready_tcp_port": PORT},
            {"name": "sink", "host": "target", "argv": [PY, "-c", SINK, str(SINK_PORT)],
             "ready_tcp_port": SINK_PORT}],
    }


@pytest.fixture
def bridged(lab_factory, tmp_path):
    """(lab, recording path, links of the bridge namespace before any pool)."""
    lab = lab_factory(topology(str(tmp_path)))
    sessions = [recording.Session(
        f"s{i}", f"10.1.0.1:{40000 + i}", f"{TARGET}:{PORT}", 0.0,
        chunks=(recording.Chunk(0, 0.0, b"".join(
            request_bytes(TARGET, f"/s{i}/r{r}") for r in range(REQUESTS))),))
        for i in range(SESSIONS)]
    rec = str(tmp_path / "rec.jsonl")
    recording.write(rec, sessions)
    return lab, rec, links_of(lab)


def links_of(lab) -> list[str]:
    done = lab.run("sw", ["ip", "-o", "link", "show"])
    return sorted(line.split(":")[1].strip().split("@")[0] for line in done.stdout.splitlines())


def assert_nothing_left(lab, links_before: list[str]) -> None:
    assert pool.leftovers() == []
    assert links_of(lab) == links_before         # every bridge port of the pool gone


def pool_args(lab, *extra: str) -> list[str]:
    return ["--pool", POOL, "--via", "br0", "--via-netns", lab.netns("sw"), *extra]


def test_replay_copies_come_from_distinct_pool_addresses_and_nothing_is_left(bridged,
                                                                             tmp_path):
    lab, rec, before = bridged
    done = CliRunner().invoke(cli, [
        "mirror", "replay", "--recording", rec, "--target", f"{TARGET}:{PORT}",
        "--factor", "3", "--out-dir", str(tmp_path / "out"), *pool_args(lab)])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert [(c["exit"], c["replayed"], c["errors"]) for c in summary["copies"]] == \
        [(0, SESSIONS, 0)] * 3
    by_source: dict[str, list[str]] = {}
    for entry in read_log(str(tmp_path / "target.log")):
        by_source.setdefault(entry["src"].rpartition(":")[0], []).append(entry["path"])
    # the first three hosts of the pool, the target's own address skipped
    assert sorted(by_source) == ["10.95.0.2", "10.95.0.3", "10.95.0.4"]
    wanted = sorted(f"/s{i}/r{r}" for i in range(SESSIONS) for r in range(REQUESTS))
    for source, paths in by_source.items():
        assert sorted(paths) == wanted, source
    assert_nothing_left(lab, before)


def test_a_refused_target_fails_every_session_and_leaves_nothing(bridged, tmp_path):
    lab, rec, before = bridged
    done = CliRunner().invoke(cli, [
        "mirror", "replay", "--recording", rec, "--target", f"{TARGET}:{CLOSED_PORT}",
        "--factor", "2", "--out-dir", str(tmp_path / "out"), *pool_args(lab)])
    assert done.exit_code == 0, done.output
    copies = json.loads(done.stdout)["copies"]
    assert [(c["exit"], c["replayed"], c["errors"]) for c in copies] == \
        [(0, SESSIONS, SESSIONS)] * 2
    with open(copies[0]["out"]) as handle:
        assert all("ConnectionRefused" in json.loads(line)["error"] for line in handle)
    assert_nothing_left(lab, before)


def start_held_replay(lab, tmp_path) -> subprocess.Popen:
    """``elbctl mirror replay --pool`` at x2 whose copies hold their connections to the
    sink (the second chunk is an hour away); returns once both copies are connected, so
    the pool is built and its workers run inside it."""
    held = [recording.Session(f"h{i}", f"10.1.0.1:{41000 + i}", f"{TARGET}:{SINK_PORT}",
                              0.0, chunks=(recording.Chunk(0, 0.0, b"a"),
                                           recording.Chunk(1, 3600.0, b"b")))
            for i in range(2)]
    rec = str(tmp_path / "held.jsonl")
    recording.write(rec, held)
    command = subprocess.Popen(
        [PY, "-m", "dcnet.cli.elbctl", "mirror", "replay", "--recording", rec,
         "--target", f"{TARGET}:{SINK_PORT}", "--factor", "2", "--timing",
         "--out-dir", str(tmp_path / "out"), *pool_args(lab)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while established(lab, SINK_PORT) < 4:
        if command.poll() is not None or time.monotonic() > deadline:
            command.kill()
            _, err = command.communicate()
            pytest.fail(f"the copies never connected: {err.decode()}")
        time.sleep(0.1)
    names = pool.leftovers()
    assert len(names) == 2 and all(netns_mod.pids(n) for n in names)
    return command


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_replay_removes_the_pool_and_its_workers(bridged, tmp_path, signum):
    lab, _, before = bridged
    command = start_held_replay(lab, tmp_path)
    try:
        command.send_signal(signum)
        _, err = command.communicate(timeout=60)
    finally:
        if command.poll() is None:
            command.kill()
            command.communicate()
    assert command.returncode != 0, err
    assert_nothing_left(lab, before)


def test_sweep_removes_the_pool_of_a_killed_replay_and_only_that(bridged, tmp_path):
    lab, _, before = bridged
    command = start_held_replay(lab, tmp_path)
    try:
        live = CliRunner().invoke(cli, ["mirror", "sweep"])
        assert live.exit_code == 0 and live.stdout == "removed 0 pool namespaces\n"
        assert len(pool.leftovers()) == 2          # the owner is alive: untouched
    finally:
        command.kill()                             # no undo runs: the pool is left
        command.communicate()
    names = pool.leftovers()
    assert len(names) == 2 and all(netns_mod.pids(n) for n in names)   # workers still in
    done = CliRunner().invoke(cli, ["mirror", "sweep"])
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("removed 2 pool namespaces: ")
    assert sorted(done.stdout.split(": ")[1].split()) == sorted(names)
    assert_nothing_left(lab, before)
    assert established(lab, SINK_PORT) == 0 or wait_closed(lab)


def wait_closed(lab) -> bool:
    """The killed workers' connections close (FIN/RST on the way): bounded wait."""
    deadline = time.monotonic() + 30
    while established(lab, SINK_PORT):
        assert time.monotonic() < deadline, "the swept workers' connections stayed open"
        time.sleep(0.1)
    return True


def established(lab, port: int) -> int:
    done = lab.run("target", ["ss", "-Htn", "state", "established", f"sport = :{port}"])
    return len(done.stdout.splitlines())


def test_loadtest_breaks_at_the_first_step_under_a_tiny_slo(bridged, tmp_path):
    lab, rec, before = bridged
    out = tmp_path / "report"
    done = CliRunner().invoke(cli, [
        "mirror", "loadtest", rec, "--target", f"{TARGET}:{PORT}", "--slo-p99-ms",
        "0.000001", "--slo-errors", "0", "--steps", "1,2", "--out-dir", str(out),
        *pool_args(lab)])
    assert done.exit_code == 0, done.output
    report = json.loads((out / "loadtest.json").read_text())
    assert (report["breaking_step"], report["last_passing_step"]) == (1.0, None), done.stderr
    assert len(report["steps"]) == 1 and report["reasons"][0].startswith("p99 "), done.stderr
    assert report["steps"][0]["answered"] == report["steps"][0]["requests"] == \
        SESSIONS * REQUESTS
    assert "broke at x1" in (out / "loadtest.md").read_text()
    assert (out / "loadtest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_nothing_left(lab, before)


def test_loadtest_reports_the_step_where_errors_break_the_slo(bridged, tmp_path):
    """A generous latency SLO holds; the target is stopped after x2, so x3 fails every
    request and breaks the error SLO; x5 never runs."""
    lab, rec, before = bridged
    seen = []

    def stop_after_x2(stats: dict) -> None:
        seen.append(stats["factor"])
        if stats["factor"] == 2.0:
            lab.process("target").terminate()
            lab.process("target").wait(30)

    with pool.SourcePool(POOL, 5, "br0", lab.netns("sw"), reserved=[TARGET]) as made:
        report = loadtest.run_loadtest(rec, f"{TARGET}:{PORT}", loadtest.Slo(60_000, 0.01),
                                       made.namespaces, str(tmp_path), [1, 2, 3, 5],
                                       stop_after_x2)
    assert seen == [1.0, 2.0, 3.0]
    assert (report["breaking_step"], report["last_passing_step"]) == (3.0, 2.0)
    held, broken = report["steps"][1], report["steps"][2]
    assert (held["requests"], held["errors"], held["breaches"]) == \
        (2 * SESSIONS * REQUESTS, 0, [])
    assert (broken["requests"], broken["answered"]) == (3 * SESSIONS * REQUESTS, 0)
    assert report["reasons"] == ["errors 100.00% > 1.00%"]
    assert_nothing_left(lab, before)
