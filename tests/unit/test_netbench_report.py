"""netbench report and compare: on a captured result file and on controlled documents."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from dcnet.netbench import compare, report, results, summary
from dcnet.netbench.results import ResultFile, ResultsError, Sample

pytestmark = pytest.mark.unit

CAPTURED = Path(__file__).parent.parent / "data" / "netbench" / "results_quick.json"


def document(samples: dict[str, list[float]], metric: str = "gbps", kind: str = "tcp",
             test: str = "tcp-1", baseline: str = "veth") -> dict:
    """A result document with one test and the given per-mode values (round 0 warm-up)."""
    rows = []
    for mode, values in samples.items():
        rows.append({"mode": mode, "test": test, "kind": kind, "round": 0, "warmup": True,
                     "ok": True, "metrics": {metric: 999.0}, "load_average": [1.0]})
        for index, value in enumerate(values, start=1):
            rows.append({"mode": mode, "test": test, "kind": kind, "round": index,
                         "warmup": False, "ok": True, "metrics": {metric: value},
                         "load_average": [2.0]})
    rows.append({"mode": baseline, "test": test, "kind": kind, "round": 9, "warmup": False,
                 "ok": False, "error": "iperf3: the server is busy", "metrics": {},
                 "load_average": [3.0]})
    return {"format": results.FORMAT, "version": results.VERSION,
            "run": {"state": "complete", "started": 0, "finished": 0, "errors": []},
            "definition": {"name": "synthetic", "modes": list(samples), "baseline": baseline,
                           "repeats": 5, "warmup_rounds": 1, "seed": 1, "min_effect": 0.05,
                           "tests": [{"name": test, "kind": kind}]},
            "environment": {"load_average": ["1", "2", "3"]},
            "modes": {m: {"status": "ok", "path": "somewhere", "interfaces": [{"mtu": 1500}]}
                      for m in samples},
            "samples": rows}


def test_figures_drop_warmup_and_failed_samples():
    doc = document({"veth": [10, 10.2, 9.8, 10.1, 9.9], "bridge": [8, 8.1, 7.9, 8.05, 7.95]})
    figures = summary.figures(doc)
    veth = summary.find(figures, "veth", "tcp-1", "gbps")
    assert veth.estimate.n == 5 and veth.estimate.median == 10.0  # 999 warm-up dropped
    assert veth.vs_baseline is None
    bridge = summary.find(figures, "bridge", "tcp-1", "gbps")
    assert bridge.vs_baseline.ratio == pytest.approx(0.8)
    assert summary.verdict(bridge.metric, bridge.vs_baseline) == "worse"


def test_verdict_knows_lower_is_better():
    doc = document({"veth": [10, 10.2, 9.8, 10.1, 9.9], "macvlan": [8, 8.1, 7.9, 8.05, 7.95]},
                   metric="p50_us", kind="latency", test="lat")
    fig = summary.find(summary.figures(doc), "macvlan", "lat", "p50_us")
    assert summary.verdict(fig.metric, fig.vs_baseline) == "better"


def test_render_synthetic_ratio_table():
    doc = document({"veth": [10, 10.2, 9.8, 10.1, 9.9], "bridge": [8, 8.1, 7.9, 8.05, 7.95]})
    text = report.render(doc)
    assert "| veth | 10.00 |" in text  # the baseline row: absolute median
    assert "| bridge | 0.80x* [" in text  # significant, with its interval
    assert report.CAVEAT in text
    assert "## Failed samples" in text and "iperf3: the server is busy" in text
    assert "median 2.00" in text  # load average during the samples


def test_render_captured_run():
    data = results.load(str(CAPTURED))
    text = report.render(data)
    assert text.startswith("# netbench report: quick")
    assert "| veth | ok |" in text and "| host-gw | ok |" in text
    assert "## Ratios to the veth baseline" in text
    ratio_rows = [line for line in text.splitlines() if line.startswith("| host-gw | ")]
    assert any("x [" in line for line in ratio_rows)
    for heading in ("### tcp-1 (tcp)", "### udp (udp)", "### latency (latency)",
                    "### conn-rate (connrate)"):
        assert heading in text
    assert "only 2 repeats" in text
    assert "Linux " in text and "Load average" in text


def test_write_report_and_plots(tmp_path):
    shutil.copy(CAPTURED, tmp_path / "results.json")
    data = results.load(str(tmp_path))
    path = report.write(data, str(tmp_path))
    assert Path(path).read_text().count("![") == 4
    for name in ("throughput.png", "latency.png", "connrate.png", "cpu.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_says_which_differences_are_significant():
    a = document({"veth": [10, 10.2, 9.8, 10.1, 9.9], "bridge": [8, 8.1, 7.9, 8.05, 7.95]})
    b = copy.deepcopy(a)
    for sample in b["samples"]:
        if sample["mode"] == "bridge" and sample["ok"]:
            sample["metrics"]["gbps"] *= 1.25
    rows = {(r.mode, r.metric.key): r for r in compare.rows(a, b)}
    assert rows[("bridge", "gbps")].verdict == "better"
    assert rows[("bridge", "gbps")].comparison.ratio == pytest.approx(1.25)
    assert rows[("veth", "gbps")].verdict == "same"
    text = compare.render(a, b)
    assert "Significant differences (1 of 2):" in text
    assert "- bridge tcp-1 throughput: better (1.25x)" in text


def test_compare_identical_runs_and_disjoint_runs():
    a = document({"veth": [10, 10.2, 9.8, 10.1, 9.9]})
    assert "No significant difference in 1 comparisons." in compare.render(a, a)
    other = document({"bridge": [1.0, 2.0]}, baseline="bridge")
    assert "No (mode, test, metric) was measured in both runs." in compare.render(a, other)


def test_compare_warns_when_too_few_samples():
    data = results.load(str(CAPTURED))
    text = compare.render(data, data)
    assert "With 2 samples on a side no difference can reach p < 0.05" in text


def test_result_file_round_trip(tmp_path):
    file = ResultFile(str(tmp_path), {"name": "x"}, {"kernel": {}}, ["netbench", "run"])
    file.set_mode("veth", status="ok")
    file.add_sample(Sample("veth", "t", "tcp", 0, False, 0, 0.0, 1.0, True,
                           metrics={"gbps": 1.0}))
    on_disk = results.load(str(tmp_path))
    assert on_disk["run"]["state"] == "running"  # written after every sample
    assert on_disk["samples"][0]["metrics"] == {"gbps": 1.0}
    file.finish("interrupted")
    assert results.load(str(tmp_path / "results.json"))["run"]["state"] == "interrupted"
    with pytest.raises(ValueError):
        file.finish("exploded")


@pytest.mark.parametrize("content, message", [
    (None, "no such result file"),
    ("{not json", "not valid JSON"),
    ('{"format": "other"}', "not a netbench result file"),
    (json.dumps({"format": results.FORMAT, "version": 99}), "version 99 is not supported"),
    (json.dumps({"format": results.FORMAT, "version": 1}), "lacks 'run'"),
])
def test_result_load_errors(tmp_path, content, message):
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ResultsError, match=message):
        results.load(str(path))


def test_cli_report_and_compare_on_captured_run(tmp_path):
    from click.testing import CliRunner

    from dcnet.cli.netbench import cli

    shutil.copy(CAPTURED, tmp_path / "results.json")
    runner = CliRunner()
    done = runner.invoke(cli, ["report", str(tmp_path), "--no-plots", "--stdout"])
    assert done.exit_code == 0, done.output
    assert "# netbench report: quick" in done.output
    assert (tmp_path / "report.md").exists() and not (tmp_path / "cpu.png").exists()
    done = runner.invoke(cli, ["compare", str(CAPTURED), str(tmp_path)])
    assert done.exit_code == 0 and "| veth | tcp-1 | throughput |" in done.output
    (tmp_path / "bad.json").write_text("{}")
    done = runner.invoke(cli, ["report", str(tmp_path / "bad.json")])
    assert done.exit_code == 1 and "not a netbench result file" in done.output


def test_full_captured_run_report_and_other_baseline():
    """The run behind docs/netbench.md: every mode reported, IPVS shown as unavailable."""
    data = results.load(str(CAPTURED.parent / "results_modes.json"))
    text = report.render(data)
    for mode in data["definition"]["modes"]:
        assert f"| {mode} | " in text
    assert "| ipvs | unavailable: this kernel has no IPVS" in text
    assert "| veth | 16.42 | 14.49 |" in text  # baseline row: absolute medians
    other = report.render(data, baseline="cni-ref-bridge")
    assert "## Ratios to the cni-ref-bridge baseline" in other
    assert "| cni-ref-bridge | 12.53 |" in other
    with pytest.raises(ValueError, match="baseline 'nope' is not a mode of this run"):
        report.render(data, baseline="nope")
