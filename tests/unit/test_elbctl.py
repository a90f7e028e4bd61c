"""elbctl validate/show/plan wiring: exit codes and messages, through click's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dcnet.cli.elbctl import cli
from dcnet.target import registry
from tests.unit.memory_backend import MemoryTarget, MemoryWorld
from tests.unit.model_fixtures import FILES, model_text

pytestmark = pytest.mark.unit
EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_validate_accepts_every_example(example):
    result = run("validate", "-f", str(example))
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"OK: {example}")


def test_examples_exist():
    assert EXAMPLES, "examples/ holds no model"


def write_model(tmp_path, mutate=None):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    path = tmp_path / "model.yaml"
    path.write_text(model_text(mutate))
    return path


def test_validate_rejects_a_broken_model_with_every_error(tmp_path):
    def mutate(d):
        d["services"][0]["ports"][0]["scheduler"] = "fastest"
        d["carriers"][0]["gateway"] = "nope"
    path = write_model(tmp_path, mutate)
    result = CliRunner().invoke(cli, ["validate", "-f", str(path)])
    assert result.exit_code == 1
    assert f"{path}: 2 errors" in result.output
    assert "services[0].ports[0].scheduler: unknown scheduler 'fastest'" in result.output
    assert "carriers[0].gateway: 'nope' is not an IP address" in result.output
    assert "OK" not in result.output


def test_validate_names_the_cidr_file_and_line(tmp_path):
    path = write_model(tmp_path)
    (tmp_path / "telecom.txt").write_text("192.0.2.0/26\nbogus\n")
    result = CliRunner().invoke(cli, ["validate", "-f", str(path)])
    assert result.exit_code == 1
    assert f"{tmp_path / 'telecom.txt'}:2: carriers[0].cidrs: not a valid network" \
        in result.output and "bogus" not in result.output     # list lines are never echoed


def test_validate_missing_file(tmp_path):
    result = CliRunner().invoke(cli, ["validate", "-f", str(tmp_path / "none.yaml")])
    assert result.exit_code == 1 and "cannot read model" in result.output


def test_validate_json_output(tmp_path):
    result = run("validate", "-f", str(write_model(tmp_path)), "-o", "json")
    assert json.loads(result.output) == {"ok": True, "carriers": 2, "services": 2}


def test_show_lists_services_and_vips(tmp_path):
    result = run("show", "-f", str(write_model(tmp_path)))
    assert "telecom=198.51.100.10" in result.output and "tcp/80 -> :8080 wrr nat" in result.output


def test_plan_with_unknown_target_exits_3(tmp_path):
    result = CliRunner().invoke(cli, ["plan", "-f", str(write_model(tmp_path)),
                                      "--target", "nosuch"])
    assert result.exit_code == 3 and "no target 'nosuch'" in result.output


@pytest.fixture
def memory_target(tmp_path):
    world = MemoryWorld(lock_path=str(tmp_path / "memory.lock"))
    registry.register(MemoryTarget.bound(world))
    yield world
    registry.unregister("memory")


def test_plan_and_apply_through_a_registered_target(tmp_path, memory_target):
    path = str(write_model(tmp_path))
    planned = json.loads(run("plan", "-f", path, "--target", "memory", "-o", "json").output)
    assert planned["summary"]["create"] == len(planned["changes"]) > 0
    applied = run("apply", "-f", path, "--target", "memory")
    assert applied.exit_code == 0 and "applied" in applied.output
    again = run("plan", "-f", path, "--target", "memory")
    assert again.output.strip() == "memory: no changes"


def test_plan_detailed_exitcode(tmp_path, memory_target):
    path = str(write_model(tmp_path))
    assert run("plan", "-f", path, "--target", "memory", "--detailed-exitcode").exit_code == 2
    assert run("apply", "-f", path, "--target", "memory").exit_code == 0
    assert run("plan", "-f", path, "--target", "memory", "--detailed-exitcode").exit_code == 0
    assert run("plan", "-f", path, "--target", "memory").exit_code == 0


def test_plan_json_has_one_schema(tmp_path, memory_target):
    data = json.loads(run("plan", "-f", str(write_model(tmp_path)), "--target", "memory",
                          "-o", "json").output)
    assert set(data) == {"target", "summary", "changes", "notes", "read_digest", "objects"}
    assert data["target"] == "memory" and data["objects"] == 0


def test_another_targets_flag_is_a_usage_error(tmp_path, memory_target):
    result = CliRunner().invoke(cli, ["plan", "-f", str(write_model(tmp_path)),
                                      "--target", "memory", "--lvs-netns", "x"])
    assert result.exit_code == 2 and "--lvs-netns is an option of lvs" in result.output


def test_a_held_lock_is_reported_with_its_holder(tmp_path, memory_target):
    from dcnet.sysio import flock

    with flock.exclusive(memory_target.lock_path, 1):
        result = CliRunner().invoke(cli, ["apply", "-f", str(write_model(tmp_path)),
                                          "--target", "memory", "--lock-timeout", "0.1"])
    assert result.exit_code == 3 and "held by pid" in result.output
    assert memory_target.state == {}


def test_the_change_guard_needs_force(tmp_path, memory_target):
    path = str(write_model(tmp_path))
    assert run("apply", "-f", path, "--target", "memory").exit_code == 0
    before = dict(memory_target.state)
    emptied = tmp_path / "empty"
    emptied.mkdir()
    empty_path = str(write_model(emptied, lambda d: [s.update(real_servers=[])
                                                      for s in d["services"]]))
    refused = CliRunner().invoke(cli, ["apply", "-f", empty_path, "--target", "memory"])
    assert refused.exit_code == 1 and "--force" in refused.output
    assert memory_target.state == before
    forced = run("apply", "-f", empty_path, "--target", "memory", "--force")
    assert forced.exit_code == 0 and memory_target.state != before


def test_apply_failure_exits_1_and_reports(tmp_path, memory_target):
    memory_target.fail_on = ("dest",)
    result = CliRunner().invoke(cli, ["apply", "-f", str(write_model(tmp_path)),
                                      "--target", "memory"])
    assert result.exit_code == 1 and "FAILED + dest" in result.output
    assert memory_target.state == {}, "rollback left state behind"
