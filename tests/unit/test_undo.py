"""Unit tests of dcnet.undo.Undo: newest first, failures reported and skipped over."""

from __future__ import annotations

import pytest

from dcnet.undo import Undo

pytestmark = pytest.mark.unit


def test_unwind_runs_newest_first_keeps_going_and_empties_the_stack():
    ran = []
    undo = Undo()
    undo.push("first", lambda: ran.append(1))
    undo.push("broken", lambda: 1 / 0)
    undo.push("third", lambda: ran.append(3))
    assert len(undo) == 3
    assert undo.unwind() == ["broken: division by zero"]
    assert ran == [3, 1]
    assert len(undo) == 0 and not undo
    assert undo.unwind() == []
