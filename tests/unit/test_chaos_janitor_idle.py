"""The janitor's idle-services part: since when a service has had no real server is
kept in the janitor's state file; the pure rules with an injected clock (a service's
clock starts at the first run that sees it empty, keeps running while it stays empty,
stops when it has servers again or leaves the model), and ``elbctl chaos unused -f
MODEL --days N`` on a real state file (listed with exit 2, nothing removed, the state
file written 0600)."""

from __future__ import annotations

import json
import os
import stat

from click.testing import CliRunner

from dcnet.chaos import janitor_idle as ji
from dcnet.cli.elbctl import cli
from dcnet.model import parse_model

DAY = 86400.0
JOB_A = "job.web_service.shop_cluster.prod_pdl.retail_owt.sre_cop.example"
JOB_B = "job.api_service.cart_cluster.prod_pdl.retail_owt.sre_cop.example"
MODEL = f"""version: 1
carriers:
  - {{name: bgp, uplink: bgp0, gateway: 203.0.113.1, table: 103,
     vip_ranges: [203.0.113.0/26], default: true}}
services:
  - job: {JOB_A}
    vips: {{bgp: 203.0.113.10}}
    ports: [{{port: 80, forward: nat}}]
    real_servers: [{{address: 10.0.0.1}}]
  - job: {JOB_B}
    vips: {{bgp: 203.0.113.11}}
    ports: [{{port: 80, forward: nat}}]
"""


def test_a_clock_starts_when_first_seen_empty_and_stops_with_servers():
    t0 = 1_000_000.0
    state = ji.track({}, {"a": 1, "b": 0}, t0)
    assert state == {"b": t0}
    state = ji.track(state, {"a": 0, "b": 0}, t0 + 2 * DAY)
    assert state == {"a": t0 + 2 * DAY, "b": t0}
    assert [s["service"] for s in ji.idle(state, t0 + 3 * DAY, 3)] == ["b"]
    assert ji.idle(state, t0 + 3 * DAY - 1, 3) == []
    assert [(s["service"], s["days"]) for s in ji.idle(state, t0 + 5 * DAY, 3)] == [
        ("b", 5.0), ("a", 3.0)]
    assert ji.idle(state, t0 + 5 * DAY, 3)[0]["since"] == "1970-01-12T13:46:40+00:00"
    # b gets a server: its clock stops; empty again later: it starts over
    state = ji.track(state, {"a": 0, "b": 2}, t0 + 6 * DAY)
    assert state == {"a": t0 + 2 * DAY}
    state = ji.track(state, {"a": 0, "b": 0}, t0 + 7 * DAY)
    assert state == {"a": t0 + 2 * DAY, "b": t0 + 7 * DAY}
    # a service that left the model is forgotten
    assert ji.track(state, {"b": 0}, t0 + 8 * DAY) == {"b": t0 + 7 * DAY}


def test_the_state_file_keeps_each_models_clocks(tmp_path):
    path = str(tmp_path / "state" / "janitor.json")
    model = parse_model(MODEL, source=str(tmp_path / "m.yaml"))
    t0 = 2_000_000.0
    first = ji.unused(model, 1, path, t0)
    assert first.services == [] and [s["service"] for s in first.watching] == [JOB_B]
    later = ji.unused(model, 1, path, t0 + DAY)
    assert [(s["service"], s["days"]) for s in later.services] == [(JOB_B, 1.0)]
    with open(path) as handle:
        saved = json.load(handle)
    assert saved["models"] == {str(tmp_path / "m.yaml"): {JOB_B: t0}}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_cli_lists_idle_services_and_removes_nothing(tmp_path):
    model_file = tmp_path / "model.yaml"
    model_file.write_text(MODEL)
    state = str(tmp_path / "janitor.json")
    args = ["chaos", "unused", "-f", str(model_file), "--janitor-state", state, "-o", "json"]
    runner = CliRunner()
    first = runner.invoke(cli, [*args, "--days", "30"])
    assert first.exit_code == 0, first.output           # empty, not for 30 days yet
    assert [s["service"] for s in json.loads(first.stdout)["watching"]] == [JOB_B]
    now = runner.invoke(cli, [*args, "--days", "0", "--apply"])
    assert now.exit_code == 2, now.output
    report = json.loads(now.stdout)
    assert [s["service"] for s in report["services"]] == [JOB_B] and report["applied"]
    assert JOB_B in model_file.read_text()               # the model is not touched
    text = runner.invoke(cli, ["chaos", "unused", "-f", str(model_file), "--janitor-state",
                               state, "--days", "0", "--apply"])
    assert "not removed: the model owns these services" in text.output
