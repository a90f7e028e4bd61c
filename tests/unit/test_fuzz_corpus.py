"""The hand-written hostile corpus (tests/data/hostile) through the real ``elbctl validate``.

Every file is refused with exit 1, one line per problem naming the file and the line of
the problem (and what is wrong), no traceback, no secret echoed, no file changed, under
a 1 GiB address-space cap (the billion laughs used to take 3.6 GB). Also: ``-f
/dev/zero`` and a FIFO that never ends, a symlink leading out of the model's directory,
and the ``DCNET_MODEL_PATHS`` allow-list.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.unit.test_fuzz_model import tree_digest

pytestmark = pytest.mark.unit

HOSTILE = Path(__file__).resolve().parents[1] / "data" / "hostile"
ELBCTL = os.path.join(os.path.dirname(sys.executable), "elbctl")
MEMORY_CAP = 1 << 30

# file -> (file the first problem names, its line, a fragment of its message)
EXPECTED = {
    "alias_loop.yaml": ("alias_loop.yaml", 4, "carriers[0].more: an alias refers to a "
                        "collection that contains it"),
    "bad_timestamp.yaml": ("bad_timestamp.yaml", 4, "carriers[0].gateway: cannot read timestamp"),
    "billion_laughs.yaml": ("billion_laughs.yaml", 7, "aliases expand to more than 100000"),
    "binary_cidr_list.yaml": ("lists/binary.txt", 2, "not UTF-8: byte 0x89 at offset 15"),
    "bom.yaml": ("bom.yaml", 3, "carriers[0].name: 'Telecom' is not valid"),
    "complex_key.yaml": ("complex_key.yaml", 2, "mapping keys must be scalars"),
    "deep_nesting.yaml": ("deep_nesting.yaml", 2, "nested deeper than 32 levels"),
    "deeper_than_libyaml.yaml": ("deeper_than_libyaml.yaml", 2, "maximum nesting depth"),
    "dev_zero_cidr_list.yaml": ("dev_zero_cidr_list.yaml", 8, "outside the model's directory"),
    "dotdot_path.yaml": ("dotdot_path.yaml", 8, "outside the model's directory"),
    "duplicate_key.yaml": ("duplicate_key.yaml", 3, "duplicate key 'carriers'"),
    "empty.yaml": ("empty.yaml", 1, "the model is empty"),
    "huge_integer.yaml": ("huge_integer.yaml", 3, "a value of 5000 characters"),
    "huge_string.yaml": ("huge_string.yaml", 3, "a value of 20000 characters"),
    "list_document.yaml": ("list_document.yaml", 1, "must be a mapping, got a list"),
    "merge_loop.yaml": ("merge_loop.yaml", 3, "alias loop"),
    "merge_not_mapping.yaml": ("merge_not_mapping.yaml", 3, "merge key ('<<') needs a mapping"),
    "non_utf8.yaml": ("non_utf8.yaml", 3, "not UTF-8: byte 0xe9 at offset 32"),
    "nul_bytes.yaml": ("nul_bytes.yaml", 3, "control characters are not allowed"),
    "only_comments.yaml": ("only_comments.yaml", 1, "the model is empty"),
    "overlapping_carriers.yaml": ("lists/unicom_overlap.txt", 3,
                                  "carriers[1].cidrs: client prefix 100.64.0.0/16 of carrier "
                                  "'unicom' overlaps 100.64.1.0/24 of carrier 'telecom'"),
    "python_tag.yaml": ("python_tag.yaml", 2, "unsupported tag"),
    "scalar_document.yaml": ("scalar_document.yaml", 1, "must be a mapping, got a string"),
    "secret_cidr_list.yaml": ("lists/secret.txt", 2, "not a valid network"),
    "shadow_path.yaml": ("shadow_path.yaml", 8, "'/etc/shadow' is outside the model's"),
    "tabs.yaml": ("tabs.yaml", 3, "invalid YAML"),
    "utf16.yaml": ("utf16.yaml", 1, "UTF-16 byte order mark"),
}
SECRETS = ("root:", "hunter2", "PNG", "daemon:")


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def validate(path: str | Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([ELBCTL, "validate", "-f", str(path)], capture_output=True,
                          text=True, timeout=120, preexec_fn=_cap_memory,
                          env=None if env is None else {**os.environ, **env})


def problem_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line.strip() for line in result.stderr.splitlines()[1:] if line.strip()]


def test_the_corpus_is_all_listed():
    assert sorted(p.name for p in HOSTILE.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_model_is_refused_with_file_and_line(name):
    before = tree_digest(str(HOSTILE))
    result = validate(HOSTILE / name)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr + result.stdout
    where, line, fragment = EXPECTED[name]
    lines = problem_lines(result)
    assert lines, result.stderr
    for problem in lines:   # every problem: FILE:LINE: ... (the summary line excepted)
        assert re.match(r"\S+:\d+: ", problem) or problem.endswith("not listed"), problem
    wanted = f"{HOSTILE / where}:{line}: "
    assert any(p.startswith(wanted) and fragment in p for p in lines), (wanted, lines)
    assert not any(secret in result.stderr for secret in SECRETS), result.stderr
    assert tree_digest(str(HOSTILE)) == before


def test_dev_zero_is_refused_at_the_size_limit():
    result = validate("/dev/zero")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "/dev/zero:1: cannot use model: more than the limit of" in result.stderr


def test_endless_fifo_is_refused_at_the_size_limit(tmp_path):
    fifo = tmp_path / "model.yaml"
    os.mkfifo(fifo)

    def feed():
        try:
            with open(fifo, "wb") as fh:
                while True:
                    fh.write(b"- lol\n" * 10_000)
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    result = validate(fifo)
    writer.join(timeout=30)
    assert not writer.is_alive()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert re.search(rf"{fifo}:\d+: cannot use model: more than the limit of", result.stderr)


def _model_with_list(tmp_path: Path, cidrs: str) -> Path:
    shutil.copytree(HOSTILE / "lists", tmp_path / "lists")
    text = (HOSTILE / "shadow_path.yaml").read_text().replace("/etc/shadow", cidrs)
    path = tmp_path / "model.yaml"
    path.write_text(text)
    return path


def test_symlink_out_of_the_model_directory_is_refused(tmp_path):
    os.symlink("/etc/passwd", tmp_path / "link.txt")
    result = validate(_model_with_list(tmp_path, "link.txt"))
    assert result.returncode == 1
    assert f"{tmp_path / 'model.yaml'}:8: carriers[0].cidrs: cannot read CIDR list " \
        "'link.txt': 'link.txt' is outside the model's directory" in result.stderr
    assert "root:" not in result.stderr


def test_allow_list_admits_a_directory_outside(tmp_path):
    outside = tmp_path / "shared"
    outside.mkdir()
    (outside / "telecom.txt").write_text("192.0.2.0/26\n")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    path = _model_with_list(model_dir, str(outside / "telecom.txt"))
    refused = validate(path)
    assert refused.returncode == 1 and "outside the model's directory" in refused.stderr
    allowed = validate(path, env={"DCNET_MODEL_PATHS": str(outside)})
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.startswith("OK")
