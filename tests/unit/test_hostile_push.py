"""``elbctl push`` under hostile input: the model, its CIDR lists and its HAProxy
templates are read with the model loader's bounds (:mod:`dcnet.model.inputs`).

The whole hostile corpus through the real ``elbctl push`` (refused before any store is
contacted: the store URL points at a closed port), the same first problem as
``validate`` names; then what push reads that validate does not: symlinks leading out,
FIFOs and non-UTF-8 bytes in list files and templates, files over the size limit.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dcnet.elbstore import bundle
from dcnet.model import ModelError, inputs
from tests.unit.test_fuzz_corpus import EXPECTED, HOSTILE, SECRETS, _cap_memory, problem_lines
from tests.unit.test_fuzz_model import tree_digest

pytestmark = pytest.mark.unit

ELBCTL = os.path.join(os.path.dirname(sys.executable), "elbctl")
NO_STORE = "etcd://127.0.0.1:9"        # discard port: nothing listens; never reached


def push(path: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([ELBCTL, "push", "-f", str(path), "--store", NO_STORE],
                          capture_output=True, text=True, timeout=120,
                          preexec_fn=_cap_memory)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_model_is_refused_by_push_with_file_and_line(name):
    before = tree_digest(str(HOSTILE))
    result = push(HOSTILE / name)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr + result.stdout
    assert "etcd" not in result.stderr.replace("stored in etcd", "")  # refused before the store
    lines = problem_lines(result)
    for problem in lines:
        assert re.match(r"\S+:\d+: ", problem) or problem.endswith("not listed"), problem
    where, line, fragment = EXPECTED[name]
    wanted = f"{HOSTILE / where}:{line}: "
    assert any(p.startswith(wanted) and fragment in p for p in lines), (wanted, lines)
    assert not any(secret in result.stderr for secret in SECRETS), result.stderr
    assert tree_digest(str(HOSTILE)) == before


def test_push_of_dev_zero_stops_at_the_size_limit():
    result = push("/dev/zero")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "/dev/zero:1: cannot use model: more than the limit of" in result.stderr


def _model(tmp_path: Path, cidrs: str, templates: str | None = None) -> Path:
    shutil.copytree(HOSTILE / "lists", tmp_path / "lists")
    text = (HOSTILE / "shadow_path.yaml").read_text().replace("/etc/shadow", cidrs)
    if templates is not None:
        text += f"haproxy:\n  templates: {templates}\n"
    path = tmp_path / "model.yaml"
    path.write_text(text)
    return path


def test_a_valid_model_is_collected(tmp_path):
    collected = bundle.collect(_model(tmp_path, "lists/telecom.txt"))
    assert set(collected.files) == {"model.yaml", "lists/telecom.txt", "lists/unicom.txt"}


def test_symlinked_list_leading_out_is_refused_and_not_read(tmp_path):
    os.symlink("/etc/passwd", tmp_path / "link.txt")
    result = push(_model(tmp_path, "link.txt"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{tmp_path / 'model.yaml'}:8: carriers[0].cidrs: cannot read CIDR list " \
        "'link.txt': 'link.txt' is outside the model's directory" in result.stderr
    assert "root:" not in result.stderr


def test_fifo_list_is_refused_at_the_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "MAX_LIST_BYTES", 4096)
    path = _model(tmp_path, "endless.txt")
    os.mkfifo(tmp_path / "endless.txt")
    stop = threading.Event()

    def feed():
        try:
            with open(tmp_path / "endless.txt", "wb") as fh:
                while not stop.is_set():
                    fh.write(b"192.0.2.0/24\n" * 1000)
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    with pytest.raises(ModelError) as caught:
        bundle.collect(path)
    stop.set()
    writer.join(timeout=30)
    text = str(caught.value)
    assert re.search(r"endless.txt:\d+: carriers\[0\].cidrs: unusable CIDR list: more than "
                     r"the limit of 4096 bytes", text), text


def test_binary_list_is_refused_with_its_line(tmp_path):
    path = _model(tmp_path, "lists/binary.txt")
    with pytest.raises(ModelError, match=r"lists/binary.txt:2: carriers\[0\].cidrs: unusable "
                       r"CIDR list: not UTF-8: byte 0x89 at offset 15"):
        bundle.collect(path)


def test_non_utf8_template_is_refused_with_its_line(tmp_path):
    path = _model(tmp_path, "lists/telecom.txt", templates="tpl")
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "service.cfg.j2").write_bytes(b"# ok\n# ok\nbad \xff byte\n")
    with pytest.raises(ModelError, match=r"tpl/service.cfg.j2:3: haproxy.templates: cannot "
                       r"use template: not UTF-8: byte 0xff at offset 14"):
        bundle.collect(path)


def test_oversized_template_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(bundle, "MAX_TEMPLATE_BYTES", 100)
    path = _model(tmp_path, "lists/telecom.txt", templates="tpl")
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "service.cfg.j2").write_text("#\n" * 200)
    with pytest.raises(ModelError, match=r"service.cfg.j2:1: haproxy.templates: cannot use "
                       r"template: file is 400 bytes, more than the limit of 100 bytes"):
        bundle.collect(path)


def test_symlinked_template_leading_out_is_refused(tmp_path):
    path = _model(tmp_path, "lists/telecom.txt", templates="tpl")
    (tmp_path / "tpl").mkdir()
    os.symlink("/etc/passwd", tmp_path / "tpl" / "service.cfg.j2")
    with pytest.raises(ModelError, match="outside the model's directory") as caught:
        bundle.collect(path)
    assert "root:" not in str(caught.value)
