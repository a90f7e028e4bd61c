"""Operator template overrides that fail (issue #15): HAProxy and keepalived templates.

A template that raises (division by zero, an undefined name, endless recursion), does
not parse, escapes the sandbox (``''.__class__``), loops without end, or asks for a huge
string or number is refused with one line naming the template file and line, exit 1,
nothing written; the built-in templates render as before. A template that renders
garbage is refused by the configuration check (``keepalived -t``, ``haproxy -c``).
DNS (BIND) has no operator templates: its files are rendered from the package only.
"""

from __future__ import annotations

import os
import subprocess
import sys

import jinja2
import pytest

from dcnet import templating
from dcnet.haproxy import render as hrender
from dcnet.haproxy.paths import Paths
from dcnet.lab import lvs_lab as lvslab
from dcnet.lvs.keepalived import KeepalivedError, render
from dcnet.model import parse_model

pytestmark = pytest.mark.unit

ELBCTL = os.path.join(os.path.dirname(sys.executable), "elbctl")

# template text -> (line of the problem, a fragment of the message)
HOSTILE = {
    "raises": ("# ok\n{{ 1 // 0 }}\n", 2, "ZeroDivisionError"),
    "undefined": ("\n\n{{ no_such_name }}\n", 3, "UndefinedError: 'no_such_name' is undefined"),
    "syntax": ("# ok\n{% for %}\n", 2, "TemplateSyntaxError"),
    "recursion": ("{% macro f(n) %}{{ f(n) }}{% endmacro %}\n{{ f(1) }}\n", 1,
                  "RecursionError"),
    "sandbox escape": ("\n{{ ''.__class__.__mro__[1].__subclasses__() }}\n", 2,
                       "SecurityError"),
    "huge string": ("{{ 'x' * 1000000000 }}\n", 1, "OverflowError"),
    "huge number": ("{{ 10 ** 10000000 }}\n", 1, "OverflowError: an exponent"),
    "huge range": ("{{ range(10000000) | list | length }}\n", 1, "OverflowError"),
    "endless loop": ("# ok\n{% for i in range(100000) %}{% for j in range(100000) %}"
                     "{% endfor %}{% endfor %}\n", 2, "still rendering after"),
}


@pytest.fixture(autouse=True)
def short_deadline(monkeypatch):
    monkeypatch.setattr(templating, "RENDER_SECONDS", 1.0)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_render_names_template_file_and_line(tmp_path, name):
    text, line, fragment = HOSTILE[name]
    (tmp_path / "t.j2").write_text(text)
    env = templating.environment(jinja2.FileSystemLoader(str(tmp_path)))
    with pytest.raises(templating.TemplateFailure) as caught:
        templating.render(env, "t.j2")
    assert str(caught.value).startswith(f"{tmp_path / 't.j2'}:{line}: ")
    assert fragment in str(caught.value)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_keepalived_override_refused_with_file_and_line(tmp_path, name):
    text, line, fragment = HOSTILE[name]
    (tmp_path / "virtual_server.j2").write_text(text)
    with pytest.raises(KeepalivedError) as caught:
        render(lvslab.model(), templates=str(tmp_path))
    assert str(caught.value).startswith(
        f"template error: {tmp_path / 'virtual_server.j2'}:{line}: ") and \
        fragment in str(caught.value), str(caught.value)


def _lvs_model(tmp_path):
    (tmp_path / "m").mkdir()
    for name, content in lvslab.CIDR_FILES.items():
        (tmp_path / "m" / name).write_text(content)
    path = tmp_path / "m" / "model.yaml"
    path.write_text(lvslab.model_text())
    return path


@pytest.mark.parametrize("name", ["raises", "sandbox escape", "endless loop"])
def test_elbctl_render_keepalived_exits_1_with_one_line_and_writes_nothing(tmp_path, name):
    text, line, fragment = HOSTILE[name]
    model = _lvs_model(tmp_path)
    templates = tmp_path / "tpl"
    templates.mkdir()
    (templates / "keepalived.conf.j2").write_text(text)
    out = tmp_path / "keepalived.conf"
    out.write_text("before\n")
    env = {**os.environ, "DCNET_LVS_TEMPLATES": ""}
    done = subprocess.run([ELBCTL, "render", "keepalived", "-f", str(model), "--templates",
                           str(templates), "--no-check", "-o", str(out)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"elbctl: render keepalived: template error: {templates / 'keepalived.conf.j2'}:"
        f"{line}: ") and fragment in lines[0], lines
    assert out.read_text() == "before\n"


def test_keepalived_garbage_output_is_refused_by_the_check(tmp_path):
    model = _lvs_model(tmp_path)
    templates = tmp_path / "tpl"
    templates.mkdir()
    (templates / "keepalived.conf.j2").write_text(
        "virtual_server 1.2.3.4 99999 {\n    lb_kind NOPE\n    {\n")
    out = tmp_path / "keepalived.conf"
    done = subprocess.run([ELBCTL, "render", "keepalived", "-f", str(model), "--templates",
                           str(templates), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done
    assert "keepalived -t refused" in done.stderr or "needs the interfaces" in done.stderr
    assert not out.exists()


PATHS = Paths(run_dir="/run/dcnet-haproxy-hostile-test")


def _haproxy_model(tmp_path, files: dict[str, str]):
    folder = tmp_path / "tpl"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    text = lvslab.model_text() + "haproxy:\n  templates: tpl\n"
    (tmp_path / "model.yaml").write_text(text)
    return parse_model(text, source=str(tmp_path / "model.yaml"),
                       read_text=lvslab.CIDR_FILES.__getitem__), folder


@pytest.mark.parametrize("name", ["raises", "recursion", "endless loop", "sandbox escape"])
def test_haproxy_service_override_leaves_that_service_out_with_file_and_line(tmp_path, name):
    text, line, fragment = HOSTILE[name]
    model, folder = _haproxy_model(tmp_path, {"service.cfg.j2": text})
    rendered = hrender.render(model, PATHS)
    assert set(rendered.failed) == {s.name for s in model.services}
    for message in rendered.failed.values():
        assert f": template error: {folder / 'service.cfg.j2'}:{line}: " in message
        assert fragment in message
    assert "# dcnet-global" in rendered.text          # the global part still renders


def test_haproxy_global_override_is_a_located_template_error(tmp_path):
    text, line, _fragment = HOSTILE["raises"]
    model, folder = _haproxy_model(tmp_path, {"haproxy.cfg.j2": text})
    with pytest.raises(hrender.TemplateError) as caught:
        hrender.render(model, PATHS)
    assert str(caught.value).startswith(
        f"global: template error: {folder / 'haproxy.cfg.j2'}:{line}: ZeroDivisionError")


def test_builtin_templates_render_unchanged():
    text = render(lvslab.model())
    assert "virtual_server 198.51.100.10 80 {" in text
    assert "backend " in hrender.render(lvslab.model(), PATHS).text
