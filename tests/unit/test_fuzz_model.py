"""Property tests of the service model loader on mutated example models (hypothesis).

Properties, for every input: the loader returns a Model or raises ModelError (never any
other exception), every problem names its file and line, the problem list is bounded,
and loading changes no file. Short and deterministic here (``derandomize``, modest
``max_examples``, no deadline: speed is measured by bench/fuzz.py, not asserted).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings

from dcnet.model import Model, ModelError, Problem, inputs, load_model, parse_model
from tests.unit.test_fuzz_mutations import EXAMPLE_FILES, EXAMPLES, model_texts

pytestmark = pytest.mark.unit

CI = settings(max_examples=150, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def read_example_file(name: str) -> str:
    if name not in EXAMPLE_FILES:
        raise FileNotFoundError(2, "No such file or directory", name)
    return EXAMPLE_FILES[name]


def check_model_outcome(source: str, outcome: object) -> None:
    """The contract of one load: a Model, or a ModelError whose problems are located."""
    if isinstance(outcome, Model):
        return
    assert isinstance(outcome, ModelError), f"{type(outcome).__name__}: {outcome}"
    assert outcome.problems
    for problem in outcome.problems:
        if problem.message.endswith("more problems not listed"):
            continue
        assert problem.line is not None and problem.line >= 1, str(problem)
        assert problem.source, str(problem)
        assert "Traceback" not in problem.message


def parse_outcome(text: str | bytes, source: str = "m.yaml") -> object:
    try:
        if isinstance(text, bytes):
            text = inputs.decode_utf8(text)
        return parse_model(text, source=source, read_text=read_example_file,
                           files_dir="")
    except inputs.InputError as exc:     # how load_model reports undecodable text
        return ModelError([Problem(source, exc.line, "", str(exc))])
    except ModelError as exc:
        return exc


@CI
@given(model_texts())
def test_mutated_models_load_or_fail_with_located_problems(data):
    check_model_outcome("m.yaml", parse_outcome(data))


def tree_digest(root: str) -> dict[str, str]:
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as fh:
                out[os.path.relpath(full, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@settings(CI, max_examples=40)
@given(model_texts())
def test_loading_from_files_changes_no_file(data):
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(EXAMPLES / "carriers", os.path.join(tmp, "carriers"))
        path = os.path.join(tmp, "model.yaml")
        with open(path, "wb") as fh:
            fh.write(data)
        before = tree_digest(tmp)
        try:
            outcome: object = load_model(path)
        except ModelError as exc:
            outcome = exc
        check_model_outcome(path, outcome)
        assert tree_digest(tmp) == before
