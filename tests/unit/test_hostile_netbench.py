"""netbench definitions under hostile input (issue #15): read like a service model.

Every file of tests/data/hostile/netbench is refused with one ``FILE:LINE: ...`` line per
problem (no traceback, nothing executed), and so are ``/dev/zero``, an endless FIFO, a
file over the size limit and a directory. Through the real ``netbench run`` (which needs
root, so those cases skip without it): exit 1 as for any schema error, nothing built,
no run directory created.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dcnet.netbench import definition
from dcnet.netbench.definition import DefinitionError

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).resolve().parents[1] / "data" / "hostile" / "netbench"
NETBENCH = os.path.join(os.path.dirname(sys.executable), "netbench")

# file -> (line of the first problem, a fragment of its message)
EXPECTED = {
    "alias_loop.yaml": (4, "alias loop"),
    "billion_laughs.yaml": (9, "aliases expand to more than 100000 nodes"),
    "deep_nesting.yaml": (4, "nested deeper than 32 levels"),
    "empty.yaml": (1, "the definition is empty"),
    "huge_string.yaml": (4, "a value of 50000 characters"),
    "non_utf8.yaml": (4, "cannot use: not UTF-8: byte 0xe9 at offset 55"),
    "nul_bytes.yaml": (4, "control characters are not allowed"),
    "python_tag.yaml": (4, "unsupported tag"),
    "utf16.yaml": (1, "UTF-16 byte order mark"),
    "wrong_types.yaml": (4, "repeats: must be an integer"),
}


def problems(path: str | Path) -> list[str]:
    with pytest.raises(DefinitionError) as caught:
        definition.load(path)
    return [str(p) for p in caught.value.problems]


def test_the_corpus_is_all_listed():
    assert sorted(p.name for p in CORPUS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_definition_is_refused_with_file_and_line(name):
    lines = problems(CORPUS / name)
    line, fragment = EXPECTED[name]
    for problem in lines:
        assert re.match(rf"{re.escape(str(CORPUS / name))}:\d+: ", problem), problem
    assert lines[0].startswith(f"{CORPUS / name}:{line}: ") and fragment in lines[0], lines


def test_dev_zero_is_refused_at_the_size_limit():
    (problem,) = problems("/dev/zero")
    assert problem == ("/dev/zero:1: cannot use: more than the limit of "
                       f"{definition.MAX_DEFINITION_BYTES} bytes (stopped reading there)")


def test_a_file_over_the_limit_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#\n" * (definition.MAX_DEFINITION_BYTES // 2 + 1))
    (problem,) = problems(big)
    assert problem.startswith(f"{big}:1: cannot use: file is ")


def test_an_endless_fifo_is_refused_at_the_size_limit(tmp_path):
    fifo = tmp_path / "def.yaml"
    os.mkfifo(fifo)
    stop = threading.Event()

    def feed():
        try:
            with open(fifo, "wb") as fh:
                while not stop.is_set():
                    fh.write(b"# lol\n" * 10_000)
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    (problem,) = problems(fifo)
    stop.set()
    writer.join(timeout=30)
    assert re.match(rf"{fifo}:\d+: cannot use: more than the limit of", problem), problem


def test_a_directory_is_refused(tmp_path):
    assert problems(tmp_path) == [f"{tmp_path}: cannot read: Is a directory"]


@pytest.mark.skipif(os.geteuid() != 0, reason="netbench run needs root")
@pytest.mark.parametrize("name", ["non_utf8.yaml", "billion_laughs.yaml", "python_tag.yaml"])
def test_netbench_run_refuses_with_one_located_line_and_builds_nothing(name, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([NETBENCH, "run", str(CORPUS / name), "-o", str(out),
                           "--no-progress"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr + done.stdout
    line, fragment = EXPECTED[name]
    assert done.stderr.startswith(f"netbench: {CORPUS / name}:{line}: ") and \
        fragment in done.stderr, done.stderr
    assert not out.exists()
    assert not Path("/tmp/pwned").exists()
