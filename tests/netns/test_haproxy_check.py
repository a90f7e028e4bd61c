"""Rendered files against the real ``haproxy -c``: every example renders valid, and bad
services are found by name in a few checks, not one check per service. (No namespaces
are needed, but the real HAProxy binary is, so these live with the daemon tests.)"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from dcnet.cli.elbctl import cli
from dcnet.haproxy.check import render_valid, run_check
from dcnet.haproxy.paths import Paths
from dcnet.lab import haproxy_lab as hlab
from dcnet.model import load_model

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy")]
EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))
PATHS = Paths(run_dir="/run/dcnet-haproxy-test")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_renders_a_file_haproxy_accepts(example):
    checked = render_valid(load_model(example), PATHS)
    assert checked.bad == {} and checked.checks == 1
    assert run_check(checked.rendered.text).ok


def write(tmp_path, data, overrides):
    folder = tmp_path / "templates"
    folder.mkdir()
    for name, text in overrides.items():
        (folder / f"{name}.cfg.j2").write_text(text)
    path = tmp_path / "model.yaml"
    data["haproxy"]["templates"] = "templates"
    path.write_text(yaml.safe_dump(data))
    return path


BAD_KEYWORD = ('{% extends "builtin/service.cfg.j2" %}'
               "{% block backend_options %}\n    frobnicate yes{% endblock %}")
BAD_POSTPARSE = ('{% extends "builtin/service.cfg.j2" %}'
                 "{% block frontend_options %}\n    use_backend nowhere{% endblock %}")
BAD_JINJA = "{% for %}"


def test_bad_services_are_named_in_few_checks_and_the_others_render(tmp_path):
    data = hlab.model_data({hlab.server_address(1): 1}, services=200)
    names = [hlab.job_name(n) for n in (17, 101, 150)]
    path = write(tmp_path, data, {names[0]: BAD_KEYWORD, names[1]: BAD_POSTPARSE,
                                  names[2]: BAD_JINJA})
    checked = render_valid(load_model(path), PATHS)
    assert sorted(checked.bad) == sorted(names)
    assert "frobnicate" in " ".join(checked.bad[names[0]])
    assert "nowhere" in " ".join(checked.bad[names[1]])
    assert "template error" in " ".join(checked.bad[names[2]])
    assert checked.checks <= 4          # not one per service (200)
    text = checked.rendered.text
    assert text.count("# dcnet-service ") == 197
    assert run_check(text).ok


def test_elbctl_render_haproxy_names_the_bad_service(tmp_path):
    data = hlab.model_data({hlab.server_address(1): 1}, services=3)
    path = write(tmp_path, data, {hlab.job_name(2): BAD_KEYWORD})
    out = tmp_path / "haproxy.cfg"
    result = CliRunner().invoke(cli, ["render", "haproxy", "-f", str(path), "-o", str(out),
                                      "--run-dir", "/run/x"])
    assert result.exit_code == 1
    assert f"service {hlab.job_name(2)}: invalid, left out" in result.output
    assert "frobnicate" in result.output
    assert run_check(out.read_text()).ok
    assert os.stat(out).st_size > 0 and hlab.job_name(1) in out.read_text()
