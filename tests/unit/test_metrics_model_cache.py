"""The exporter's model is parsed from YAML by its first loader child only: later
children unpickle the model that child handed back (the same model, the same index),
and the exporter then keeps that pickle, not the text."""

from __future__ import annotations

import pickle

import pytest

from dcnet.cli.elbctl_metrics import IsolatedWatch, check_in_child
from dcnet.metrics.elb import ServiceIndex
from dcnet.model import load_model
from dcnet.model import pieces as model_pieces
from tests.unit.test_metrics_isolated import model_text, write_model

pytestmark = pytest.mark.unit


def test_later_children_unpickle_the_model_the_first_one_parsed(tmp_path):
    path = write_model(tmp_path, model_text())
    watch = IsolatedWatch({}, path, interval=0)
    assert watch.text is None and watch.pickled is not None
    model = load_model(path)
    assert model_pieces.unpack(watch.pickled) == model
    first = watch.current
    # the file is not read again (as before: an edit is seen at a restart)
    (tmp_path / "model.yaml").write_text("not: a model\n")
    watch.check()
    assert watch.current is first and watch.current == ServiceIndex.of(model, services=False)
    digest, index, drifts, parsed = check_in_child({}, path, None, 5.0, {}, None, False,
                                                   True, watch.pickled)
    assert parsed is None and digest == watch.digest and drifts == {}
    assert pickle.loads(index) == first
