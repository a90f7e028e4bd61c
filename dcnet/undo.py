"""The explicit undo stack every multi-step operation uses to take back what it did.

It owns ``Undo``: after each step succeeds, ``push`` a description and the action that
reverses it; on failure (or at teardown) ``unwind`` runs the actions newest first, keeps
going when one fails, and returns one ``"<description>: <error>"`` line per failure so
the caller can report them all. Users: the CNI host-gw ADD and the macvlan agent's ADD
(dcnet.cni), and the namespace lab builder (dcnet.lab.builder).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Undo:
    """An explicit undo stack: ``push`` after each step, ``unwind`` on failure."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Callable[[], Any]]] = []

    def push(self, description: str, action: Callable[[], Any]) -> None:
        """Record ``action`` as the way to reverse the step just done."""
        self.steps.append((description, action))

    def __len__(self) -> int:
        return len(self.steps)

    def unwind(self) -> list[str]:
        """Run every recorded action, newest first, and empty the stack; an action that
        raises (an Exception) does not stop the others. Returns the failures."""
        errors = []
        while self.steps:
            description, action = self.steps.pop()
            try:
                action()
            except Exception as exc:  # keep unwinding; report at the end
                errors.append(f"{description}: {exc}")
        return errors
