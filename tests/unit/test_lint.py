"""elbctl lint: each rule fires on a model that breaks it, is silenced by the service's
``lint: {ignore: [...]}``, and findings carry the model's file and line; the CLI exits 1
on an error-severity finding; a malformed ignore list is a located model error."""

from __future__ import annotations

import os
import re

import pytest
import yaml
from click.testing import CliRunner

from dcnet.cli.elbctl import cli
from dcnet.lint import RULES, lint, lint_file
from dcnet.model import ModelError, parse_model
from dcnet.model.yamlsource import load_located
from tests.unit.model_fixtures import BASE, FILES, model_text, read_file

GOOD = {"real_servers": [{"address": "10.0.0.3"}, {"address": "10.0.0.4"}],
        "vips": {"telecom": "198.51.100.11", "bgp": "203.0.113.11"}}


def clean(data):
    data["services"][1].update(GOOD)


def run(mutate):
    def both(data):
        clean(data)
        mutate(data)
    text = model_text(both)
    model = parse_model(text, source="m.yaml", read_text=read_file())
    return lint(model, load_located(text, "m.yaml").line_of), text


def service(data):
    return data["services"][0]


BREAKS = {
    "ELB001": lambda d: service(d).update(real_servers=[{"address": "10.0.0.1"}]),
    "ELB002": lambda d: service(d).update(health_check={"type": "none"}),
    "ELB003": lambda d: service(d).update(vips={"bgp": "203.0.113.10"}),
    "ELB004": lambda d: service(d)["ports"][0].update(persistence=86400),
    "ELB005": lambda d: service(d).update(real_servers=[
        {"address": "10.0.0.1", "weight": 0}, {"address": "10.0.0.2", "weight": 0}]),
    "ELB006": lambda d: service(d).update(job=BASE["services"][0]["job"].replace(
        "cluster.prod", "cluster.tmp")),
}


def test_the_base_model_made_redundant_is_clean():
    assert run(lambda d: None)[0] == []


def test_every_rule_has_a_breaking_case():
    assert sorted(BREAKS) == sorted(r.id for r in RULES)


@pytest.mark.parametrize("rule_id", sorted(BREAKS))
def test_rule_fires_at_the_field_line(rule_id):
    findings, text = run(BREAKS[rule_id])
    assert [f.rule for f in findings] == [rule_id]
    finding = findings[0]
    assert finding.service == BASE["services"][0]["job"].replace(
        "cluster.prod", "cluster.tmp" if rule_id == "ELB006" else "cluster.prod")
    assert finding.field.startswith("services[0].")
    key = re.findall(r"[a-z_]+", finding.field)[-1]
    assert text.splitlines()[finding.line - 1].strip().startswith(
        (f"{key}:", f"- {key}:")), (finding, text)
    assert str(finding).startswith(f"m.yaml:{finding.line}: {rule_id} {finding.severity}: ")


@pytest.mark.parametrize("rule_id", sorted(BREAKS))
def test_rule_is_silenced_per_service(rule_id):
    def silenced(data):
        BREAKS[rule_id](data)
        service(data)["lint"] = {"ignore": [rule_id]}
    assert run(silenced)[0] == []


def test_silencing_one_service_leaves_the_other_checked():
    def mutate(data):
        for s in data["services"]:
            s["health_check"] = {"type": "none"}
        service(data)["lint"] = {"ignore": ["ELB002"]}
    findings = run(mutate)[0]
    assert [(f.rule, f.field) for f in findings] == [("ELB002", "services[1].health_check.type")]


def test_an_ignore_naming_no_rule_is_reported():
    findings = run(lambda d: service(d).update(lint={"ignore": ["ELB999"]}))[0]
    assert [(f.rule, f.field) for f in findings] == [("ELB000", "services[0].lint.ignore[0]")]


@pytest.mark.parametrize("value, field, message", [
    ({"ignore": ["nope"]}, "services[0].lint.ignore[0]", "rule id"),
    ({"ignore": "ELB001"}, "services[0].lint.ignore", "must be a list"),
    ({"silence": ["ELB001"]}, "services[0].lint.silence", "unknown field"),
    (["ELB001"], "services[0].lint", "must be a mapping"),
])
def test_a_malformed_lint_field_is_a_located_model_error(value, field, message):
    text = model_text(lambda d: service(d).update(lint=value))
    with pytest.raises(ModelError) as info:
        parse_model(text, source="m.yaml", read_text=read_file())
    [problem] = info.value.problems
    assert (problem.path, problem.source) == (field, "m.yaml")
    assert message in problem.message
    assert problem.line and "lint" in "\n".join(text.splitlines()[problem.line - 3:problem.line])


def write(tmp_path, mutate):
    def both(data):
        clean(data)
        mutate(data)
    for name, content in FILES.items():
        (tmp_path / name).write_text(content)
    path = tmp_path / "m.yaml"
    path.write_text(model_text(both))
    return str(path)


def test_cli_exits_1_on_an_error_rule_and_0_on_warnings(tmp_path):
    runner = CliRunner()
    warn = write(tmp_path, BREAKS["ELB001"])
    result = runner.invoke(cli, ["lint", "-f", warn])
    assert result.exit_code == 0, result.output
    assert f"{warn}:" in result.output and "ELB001 warning:" in result.output
    error = write(tmp_path, BREAKS["ELB005"])
    result = runner.invoke(cli, ["lint", "-f", error, "-o", "json"])
    assert result.exit_code == 1
    assert yaml.safe_load(result.output.splitlines()[0])["rule"] == "ELB005"
    assert lint_file(error)[0].line is not None


def test_cli_on_an_invalid_model_exits_1(tmp_path):
    path = write(tmp_path, lambda d: service(d).update(lint={"ignore": [1]}))
    result = CliRunner().invoke(cli, ["lint", "-f", path])
    assert result.exit_code == 1
    assert f"{os.path.basename(path)}:" in result.output


def test_lint_rules_lists_every_rule():
    result = CliRunner().invoke(cli, ["lint-rules"])
    assert [line.split()[0] for line in result.output.splitlines()] == [r.id for r in RULES]


def test_one_carrier_with_a_vip_of_each_family_is_still_one_carrier():
    def dual_on_bgp(data):
        bgp = next(c for c in data["carriers"] if c["name"] == "bgp")
        bgp["gateway6"] = "2001:db8:3::1"
        bgp["vip_ranges"] = [*bgp["vip_ranges"], "2001:db8:30::/64"]
        service(data).update(vips={"bgp": ["203.0.113.10", "2001:db8:30::10"]})
    findings, _ = run(dual_on_bgp)
    assert [f.rule for f in findings] == ["ELB003"]
    assert "VIPs on carrier 'bgp' only" in findings[0].message
