"""Model errors: every problem found while loading, with file, line and field path."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One problem in a model: where it is and what is wrong."""

    source: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class ModelError(ValueError):
    """A model that failed validation; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem], last: Problem | None = None):
        self.problems = sorted(problems, key=lambda p: (p.source, p.line or 0, p.path))
        if last is not None:     # e.g. "N more problems not listed": after the others
            self.problems.append(last)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __reduce__(self):      # pickled (from a child process) with its problems in order
        return _restore, (self.problems,)


def _restore(problems: list[Problem]) -> ModelError:
    error = ModelError([])
    error.problems = list(problems)
    error.args = ("\n".join(str(p) for p in problems),)
    return error
