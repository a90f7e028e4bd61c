"""The plan core every back end shares: state, diff, ordered plan, apply with undo.

A back end describes the world as a *state*: a mapping from ``(kind, key)`` to a dict of
attributes, for the objects it owns. It reads the current state, derives the desired
state from the model, and :func:`diff` (pure) turns the two into :class:`Change` objects.
A :class:`Plan` orders them deterministically (creates and updates in the back end's kind
order, then deletes in reverse kind order) and prints as text or JSON. :func:`apply_plan`
executes a plan step by step; when a step fails it stops, undoes the steps already
applied in reverse (unless told not to) and reports exactly what happened.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

Key = tuple[Any, ...]
Attributes = Mapping[str, Any]
State = Mapping[tuple[str, Key], Attributes]


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


_SYMBOL = {Action.CREATE: "+", Action.UPDATE: "~", Action.DELETE: "-"}


@dataclass(frozen=True)
class Change:
    """One step: create, update or delete one owned object."""

    action: Action
    kind: str
    key: Key
    old: Attributes | None = None
    new: Attributes | None = None

    def inverse(self) -> Change:
        """The change that undoes this one."""
        action = {Action.CREATE: Action.DELETE, Action.DELETE: Action.CREATE}.get(
            self.action, Action.UPDATE)
        return Change(action, self.kind, self.key, old=self.new, new=self.old)

    def changed_fields(self) -> dict[str, tuple[Any, Any]]:
        old, new = self.old or {}, self.new or {}
        return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k)}

    def describe(self) -> str:
        """One line: symbol, kind, identity, and what differs."""
        ident = " ".join(str(part) for part in self.key)
        if self.action is Action.UPDATE:
            detail = ", ".join(f"{k} {_fmt(a)} -> {_fmt(b)}"
                               for k, (a, b) in self.changed_fields().items())
        else:
            attrs = self.new if self.action is Action.CREATE else self.old
            detail = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted((attrs or {}).items()))
        return f"{_SYMBOL[self.action]} {self.kind} {ident}" + (f" ({detail})" if detail else "")

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action.value, "kind": self.kind, "key": list(self.key),
                "old": _jsonable(self.old), "new": _jsonable(self.new)}


def _fmt(value: Any) -> str:
    return json.dumps(_jsonable(value)) if isinstance(value, list | tuple | dict) else str(value)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    return str(value)


def diff(current: State, desired: State) -> list[Change]:
    """Pure: the changes that turn ``current`` into ``desired`` (unordered)."""
    changes = []
    for ident, attrs in desired.items():
        have = current.get(ident)
        if have is None:
            changes.append(Change(Action.CREATE, ident[0], ident[1], new=dict(attrs)))
        elif dict(have) != dict(attrs):
            changes.append(Change(Action.UPDATE, ident[0], ident[1], old=dict(have),
                                  new=dict(attrs)))
    for ident, attrs in current.items():
        if ident not in desired:
            changes.append(Change(Action.DELETE, ident[0], ident[1], old=dict(attrs)))
    return changes


@dataclass(frozen=True)
class Plan:
    """An ordered, printable list of changes for one target."""

    target: str
    changes: tuple[Change, ...]
    notes: tuple[str, ...] = ()

    @classmethod
    def build(cls, target: str, changes: list[Change], kind_order: tuple[str, ...],
              notes: tuple[str, ...] = ()) -> Plan:
        """Order ``changes``: creates/updates by kind order, then deletes in reverse."""
        rank = {kind: i for i, kind in enumerate(kind_order)}
        unknown = {c.kind for c in changes} - set(rank)
        if unknown:
            raise ValueError(f"changes of kinds not in the kind order: {sorted(unknown)}")

        def sort_key(change: Change):
            if change.action is Action.DELETE:
                return (1, -rank[change.kind], _key_text(change.key))
            return (0, rank[change.kind], _key_text(change.key))

        return cls(target, tuple(sorted(changes, key=sort_key)), tuple(notes))

    @property
    def empty(self) -> bool:
        return not self.changes

    def counts(self) -> dict[str, int]:
        return {a.value: sum(1 for c in self.changes if c.action is a) for a in Action}

    def summary(self) -> str:
        n = self.counts()
        if self.empty:
            return f"{self.target}: no changes"
        return (f"{self.target}: {n['create']} to create, {n['update']} to update, "
                f"{n['delete']} to delete")

    def to_text(self) -> str:
        lines = [self.summary(), *(f"  {c.describe()}" for c in self.changes)]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "summary": self.counts(),
                "changes": [c.to_dict() for c in self.changes], "notes": list(self.notes)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _key_text(key: Key) -> tuple[str, ...]:
    return tuple(f"{part:>12}" if isinstance(part, int) else str(part) for part in key)


@dataclass
class ApplyResult:
    """What an apply did: the steps applied, the one that failed, what was undone."""

    plan: Plan
    applied: list[Change] = field(default_factory=list)
    failed: Change | None = None
    error: BaseException | None = None
    undone: list[Change] = field(default_factory=list)
    undo_errors: list[tuple[Change, BaseException]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed is None

    def to_text(self) -> str:
        lines = [f"applied {len(self.applied)} of {len(self.plan.changes)} change(s) "
                 f"to {self.plan.target}"]
        lines += [f"  done {c.describe()}" for c in self.applied]
        if self.failed is not None:
            lines.append(f"  FAILED {self.failed.describe()}: {self.error}")
            lines += [f"  undone {c.describe()}" for c in self.undone]
            lines += [f"  undo FAILED {c.describe()}: {e}" for c, e in self.undo_errors]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.plan.target, "ok": self.ok,
            "applied": [c.to_dict() for c in self.applied],
            "failed": self.failed.to_dict() if self.failed else None,
            "error": str(self.error) if self.error else None,
            "undone": [c.to_dict() for c in self.undone],
            "undo_errors": [{"change": c.to_dict(), "error": str(e)} for c, e in self.undo_errors],
        }


class Backend(ABC):
    """A target the model is applied to: read, desire, apply one change, undo one."""

    target: ClassVar[str]
    kind_order: ClassVar[tuple[str, ...]]

    @abstractmethod
    def read(self) -> State:
        """The current state of the objects this back end owns."""

    @abstractmethod
    def desired(self, model) -> State:
        """Pure: the state the model asks for."""

    @abstractmethod
    def apply_change(self, change: Change) -> None:
        """Carry out one change; raise on failure, leaving nothing half-done."""

    def undo_change(self, change: Change) -> None:
        self.apply_change(change.inverse())

    def notes(self) -> tuple[str, ...]:
        """Things noticed and left alone (unowned objects), for the plan's footer."""
        return ()

    def plan(self, model) -> Plan:
        changes = diff(self.read(), self.desired(model))
        return Plan.build(self.target, changes, self.kind_order, self.notes())


def apply_plan(backend: Backend, plan: Plan, *, rollback: bool = True,
               on_step: Callable[[Change], None] | None = None) -> ApplyResult:
    """Execute ``plan`` in order; on failure stop, and undo applied steps if ``rollback``."""
    result = ApplyResult(plan)
    for change in plan.changes:
        try:
            backend.apply_change(change)
        except Exception as exc:  # any failure stops the plan; it is reported, not hidden
            result.failed, result.error = change, exc
            break
        result.applied.append(change)
        if on_step:
            on_step(change)
    if result.failed is not None and rollback:
        for change in reversed(result.applied):
            try:
                backend.undo_change(change)
                result.undone.append(change)
            except Exception as exc:  # keep undoing the rest; report each failure
                result.undo_errors.append((change, exc))
    return result
