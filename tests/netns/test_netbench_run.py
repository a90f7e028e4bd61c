"""netbench end to end (root): real runs of short definitions through the CLI.

Each run builds its modes in namespaces, runs iperf3, sockperf and the connection-rate
client for one second per test, writes results.json, the report and the plots, and
tears everything down. Traffic goes only to addresses inside the namespaces the run
created, or to the root namespace's loopback for the ``loopback`` baseline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dcnet.netbench import definition, engine, results
from dcnet.netbench.definition import loads
from dcnet.sysio import netns, proc

pytestmark = pytest.mark.netns

NETBENCH = os.path.join(os.path.dirname(sys.executable), "netbench")

QUICK = Path(definition.builtin("quick")).read_text()  # veth + host-gw, 4 kinds, 1 s each

LONG_RUN = textwrap.dedent("""\
    netbench: 1
    name: interrupted
    baseline: veth
    repeats: 20
    warmup_rounds: 0
    modes: [loopback, veth]
    tests:
      - {name: tcp-1, kind: tcp, duration: 1, omit: 0}
      - {name: conn-rate, kind: connrate, duration: 1}
    """)


def netbench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([NETBENCH, *args], capture_output=True, text=True, timeout=timeout)


def assert_nothing_left(data: dict) -> None:
    """No namespace, lab state file or server process of the run survives it."""
    assert data["run"]["teardown"]["namespaces_left"] == []
    existing = set(netns.list_names())
    for name, mode in data["modes"].items():
        if mode.get("status") != "ok":
            continue
        assert not set(mode["namespaces"]) & existing, name
        for prefix in mode["lab_prefixes"]:
            assert not os.path.exists(f"/run/dcnet-lab/{prefix}.json")
        for key, server in mode["servers"].items():
            assert not proc.is_same_process(server["pid"], server["start_time"]), (name, key)


@pytest.fixture(scope="module")
def two_mode_run(tmp_path_factory):
    """One real run of the shipped quick definition (veth and host-gw, all four test
    kinds, one second each, 1 warm-up + 2 measured rounds) via the CLI."""
    root = tmp_path_factory.mktemp("netbench")
    done = netbench("run", "quick", "-o", str(root / "run"), "--no-progress")
    return root, done


def test_run_writes_versioned_results_with_environment(two_mode_run):
    root, done = two_mode_run
    assert done.returncode == 0, done.stderr + done.stdout
    assert "run complete: 24 samples (0 failed)" in done.stdout
    data = results.load(str(root / "run"))
    assert (data["format"], data["version"], data["run"]["state"]) == (
        results.FORMAT, results.VERSION, "complete")
    env = data["environment"]
    assert env["kernel"]["release"] == os.uname().release
    assert env["tools"]["iperf3"].startswith("iperf 3") and "sockperf" in env["tools"]["sockperf"]
    assert env["cpu"]["logical_cpus"] >= 1 and len(env["load_average"]) == 3
    for name in ("veth", "host-gw"):
        mode = data["modes"][name]
        assert mode["status"] == "ok"
        assert {i["mtu"] for i in mode["interfaces"]} == {1500}
        assert mode["interfaces"][0]["offloads"]["tcp-segmentation-offload"] in ("on", "off")
        assert mode["client_sysctls"]["net.ipv4.tcp_congestion_control"]
    assert data["modes"]["host-gw"]["target"].startswith("10.64.2.")


def test_run_samples_are_interleaved_and_warmup_flagged(two_mode_run):
    root, _ = two_mode_run
    data = results.load(str(root / "run"))
    samples = data["samples"]
    assert len(samples) == 3 * 2 * 4 and all(s["ok"] for s in samples)
    assert [s["round"] for s in samples] == sorted(s["round"] for s in samples)
    assert all(s["warmup"] == (s["round"] == 0) for s in samples)
    first_round = [(s["mode"], s["test"]) for s in samples if s["round"] == 0]
    assert len(set(first_round)) == 8
    by_kind = {s["kind"]: s["metrics"] for s in samples}
    assert by_kind["tcp"]["gbps"] > 0 and by_kind["tcp"]["cpu_s_per_gb"] > 0
    assert by_kind["udp"]["gbps"] > 0 and 0 <= by_kind["udp"]["loss_pct"] <= 100
    assert 0 < by_kind["latency"]["p50_us"] <= by_kind["latency"]["p99_us"]
    assert by_kind["connrate"]["connections_per_s"] > 0
    # /proc/stat counts 10 ms ticks: a one-second latency or connection-rate sample on
    # an idle moment may see none (a CI run did); a TCP sample moving gigabytes always does
    assert all(s["cpu"]["busy_s"] >= 0 and "softirq_s" in s["cpu"] for s in samples)
    idle = [(s["mode"], s["test"], s["round"]) for s in samples if s["cpu"]["busy_s"] == 0]
    assert all(s["cpu"]["busy_s"] > 0 for s in samples if s["kind"] == "tcp"), idle
    assert sum(s["cpu"]["busy_s"] for s in samples) > 0
    raw = [s["details"]["raw_latencies"] for s in samples if s["kind"] == "latency"]
    assert len(raw) == 6 and all((root / "run" / "raw" / name).stat().st_size > 0
                                 for name in raw)


def test_run_tears_everything_down(two_mode_run):
    root, _ = two_mode_run
    assert_nothing_left(results.load(str(root / "run")))


def test_report_and_compare_commands(two_mode_run, tmp_path):
    root, _ = two_mode_run
    done = netbench("report", str(root / "run"), "--stdout")
    assert done.returncode == 0, done.stderr
    text = (root / "run" / "report.md").read_text()
    assert text.strip() == done.stdout.strip()
    assert "## Ratios to the veth baseline" in text
    assert any(line.startswith("| host-gw | ") and "x [" in line for line in text.splitlines())
    for png in ("throughput.png", "latency.png", "connrate.png", "cpu.png"):
        assert (root / "run" / png).stat().st_size > 1000
    # a second, smaller run (in-process) to compare against
    second = loads(QUICK.replace("modes: [veth, host-gw]", "modes: [veth]")
                   .replace("repeats: 2", "repeats: 1"), "second.yaml")
    outcome = engine.run(second, str(tmp_path / "second"))
    assert outcome.state == "complete"
    done = netbench("compare", str(root / "run"), str(tmp_path / "second"))
    assert done.returncode == 0, done.stderr
    assert "| veth | tcp-1 | throughput |" in done.stdout
    assert "host-gw" not in done.stdout  # only what both runs measured
    assert "No significant difference" in done.stdout or "Significant differences" in \
        done.stdout


def test_schema_error_names_file_line_and_field_and_builds_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = QUICK.replace("duration: 1, omit: 0}", "duration: 0, omit: 0}", 1)
    bad.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "duration: 0" in row)
    before = set(netns.list_names())
    done = netbench("run", str(bad), "-o", str(tmp_path / "out"))
    assert done.returncode == 1
    assert f"{bad}:{line}: tests[0].duration: must be between 0.5 and 600.0, got 0" in done.stderr
    assert not (tmp_path / "out").exists()
    assert not {n for n in set(netns.list_names()) - before if "netbench" in n}


def _wait_for_samples(out: Path, count: int, popen: subprocess.Popen,
                      timeout: float = 180) -> None:
    """Readiness wait (not a timing assertion) until the run has written ``count`` samples."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert popen.poll() is None, popen.stderr.read() if popen.stderr else ""
        try:
            data = json.loads((out / "results.json").read_text())
            if len(data["samples"]) >= count:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"the run did not reach {count} samples")


@pytest.mark.parametrize("signum, whole_group", [(signal.SIGINT, True),
                                                 (signal.SIGTERM, False)])
def test_interrupted_run_leaves_nothing_and_still_writes_results(tmp_path, signum,
                                                                 whole_group):
    """Ctrl-C (SIGINT to the whole foreground group, as a terminal sends it) or SIGTERM to
    netbench alone, mid-run: exit 130, results written with the samples so far, state
    'interrupted', no namespace, state file or server left (the loopback baseline's
    servers live in the root namespace and must be stopped too)."""
    definition = tmp_path / "long.yaml"
    definition.write_text(LONG_RUN)
    out = tmp_path / "out"
    popen = subprocess.Popen([NETBENCH, "run", str(definition), "-o", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        _wait_for_samples(out, 3, popen)
        if whole_group:
            os.killpg(popen.pid, signum)
        else:
            popen.send_signal(signum)
        stdout, stderr = popen.communicate(timeout=120)
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
    assert popen.returncode == 130, stderr
    assert "interrupted" in stderr
    data = results.load(str(out))
    assert data["run"]["state"] == "interrupted"
    measured = [s for s in data["samples"] if s["ok"]]
    assert len(measured) >= 3 and len(data["samples"]) < 2 * 2 * 20
    assert data["modes"]["loopback"]["status"] == "ok"
    assert_nothing_left(data)
    assert (out / "report.md").exists()  # the report covers what was measured
    assert "run interrupted" in stdout


def test_demo_step_runs_and_cleans_up(capsys):
    from dcnet.cli.demo import STEPS, Report
    from dcnet.demo.netbench import demo

    assert STEPS[-1] == "dcnet.demo.netbench"
    report = Report()
    demo(None, None, report)
    out = capsys.readouterr().out
    assert report.failures == 0, out
    assert "| veth | " in out and "| vxlan | " in out and "namespaces removed" in out
