"""The pure values every target shares: state, change, diff and the ordered plan.

A target describes the world as a *state*: a mapping from ``(kind, key)`` to a dict of
attributes, for the objects it owns. It reads the current state, derives the desired
state from the model, and :func:`diff` (pure) turns the two into :class:`Change` objects.
A :class:`Plan` orders them deterministically (creates and updates in the target's kind
order, then deletes in reverse kind order), prints as text or JSON (one schema for every
target), and carries what applying it needs: the digest of the read it was made from
(a stale plan is refused), the number of objects owned then (the change-size guard) and
the target's own immutable payload. Nothing here does I/O; applying a plan is
:func:`dcnet.target.apply_plan`'s job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

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


def state_digest(state: State) -> str:
    """A stable digest of a state (for targets whose read has no cheaper fingerprint)."""
    text = json.dumps(sorted([[kind, _jsonable(list(key)), _jsonable(attrs)]
                              for (kind, key), attrs in state.items()], key=str))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Plan:
    """An ordered, printable list of changes for one target, and what applying it needs.

    ``read_digest``: the fingerprint of the read the plan was made from (None: the
    target cannot tell; then only a plan made under the same lock may be applied).
    ``objects``: how many objects the target owned at that read (the change guard's
    base). ``payload``: the target's own immutable data for apply (never printed)."""

    target: str
    changes: tuple[Change, ...]
    notes: tuple[str, ...] = ()
    read_digest: str | None = None
    objects: int = 0
    payload: Any = field(default=None, compare=False)

    @classmethod
    def build(cls, target: str, changes: list[Change], kind_order: tuple[str, ...],
              notes: tuple[str, ...] = (), *, read_digest: str | None = None,
              objects: int = 0, payload: Any = None) -> Plan:
        """Order ``changes``: creates/updates by kind order, then deletes in reverse."""
        rank = {kind: i for i, kind in enumerate(kind_order)}
        unknown = {c.kind for c in changes} - set(rank)
        if unknown:
            raise ValueError(f"changes of kinds not in the kind order: {sorted(unknown)}")

        def sort_key(change: Change):
            if change.action is Action.DELETE:
                return (1, -rank[change.kind], _key_text(change.key))
            return (0, rank[change.kind], _key_text(change.key))

        return cls(target, tuple(sorted(changes, key=sort_key)), tuple(notes),
                   read_digest=read_digest, objects=objects, payload=payload)

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
                "changes": [c.to_dict() for c in self.changes], "notes": list(self.notes),
                "read_digest": self.read_digest, "objects": self.objects}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _key_text(key: Key) -> tuple[str, ...]:
    return tuple(f"{part:>12}" if isinstance(part, int) else str(part) for part in key)
