"""The one apply every target goes through: guard, staleness, order, batches, undo.

:func:`apply_plan` takes a :class:`dcnet.plan.Plan` and the target that made it (or a
fresh instance of the same target) and:

1. refuses a plan that updates or deletes more than ``max_change`` of the objects the
   target owned when it was read (octoDNS's guard: only from ``GUARD_MIN_OBJECTS``
   objects on), unless ``force``;
2. refuses a stale plan: unless the plan was made under the lock this target still
   holds, the target's current fingerprint must equal the plan's ``read_digest``;
3. runs the changes in the plan's order, consecutive changes of the target's
   ``batch_kinds`` through its ``apply_batch`` (at most ``batch_size`` at a time), the
   rest one by one; the first failure stops the plan (other failures of the same batch
   are reported too);
4. on failure undoes the applied changes in reverse (an explicit undo stack), unless
   told not to, and reports exactly what happened in an :class:`ApplyResult`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dcnet.plan import Action, Change, Plan
from dcnet.target.base import StalePlan, Target, TooMuchChange

DEFAULT_MAX_CHANGE = 0.3
GUARD_MIN_OBJECTS = 10


@dataclass
class ApplyResult:
    """What an apply did: the steps applied, the one that failed, what was undone."""

    plan: Plan
    applied: list[Change] = field(default_factory=list)
    failed: Change | None = None
    error: BaseException | None = None
    more_failures: list[tuple[Change, BaseException]] = field(default_factory=list)
    undone: list[Change] = field(default_factory=list)
    undo_errors: list[tuple[Change, BaseException]] = field(default_factory=list)
    writes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failed is None

    def fail(self, change: Change, error: BaseException) -> None:
        if self.failed is None:
            self.failed, self.error = change, error
        else:
            self.more_failures.append((change, error))

    def to_text(self) -> str:
        lines = [f"applied {len(self.applied)} of {len(self.plan.changes)} change(s) "
                 f"to {self.plan.target}"]
        lines += [f"  done {c.describe()}" for c in self.applied]
        if self.failed is not None:
            lines.append(f"  FAILED {self.failed.describe()}: {self.error}")
            lines += [f"  also FAILED {c.describe()}: {e}" for c, e in self.more_failures]
            lines += [f"  undone {c.describe()}" for c in self.undone]
            lines += [f"  undo FAILED {c.describe()}: {e}" for c, e in self.undo_errors]
        if self.writes:
            lines.append("writes: " + ", ".join(f"{k} {v}" for k, v in self.writes.items()))
        lines += [f"  note: {n}" for n in self.plan.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.plan.target, "ok": self.ok,
            "applied": [c.to_dict() for c in self.applied],
            "failed": self.failed.to_dict() if self.failed else None,
            "error": str(self.error) if self.error else None,
            "more_failures": [{"change": c.to_dict(), "error": str(e)}
                              for c, e in self.more_failures],
            "undone": [c.to_dict() for c in self.undone],
            "undo_errors": [{"change": c.to_dict(), "error": str(e)} for c, e in self.undo_errors],
            "writes": dict(self.writes), "notes": list(self.plan.notes),
        }


def check_change_size(plan: Plan, max_change: float = DEFAULT_MAX_CHANGE) -> None:
    """Raise :class:`TooMuchChange` when the plan updates or deletes more than
    ``max_change`` of the ``plan.objects`` owned objects (from GUARD_MIN_OBJECTS on)."""
    if plan.objects < GUARD_MIN_OBJECTS:
        return
    counts = plan.counts()
    for action in (Action.UPDATE, Action.DELETE):
        share = counts[action.value] / plan.objects
        if share > max_change:
            raise TooMuchChange(
                f"{plan.target}: the plan would {action.value} {counts[action.value]} of "
                f"{plan.objects} objects ({share:.0%} > {max_change:.0%}); review it with "
                "'elbctl plan' and apply with --force (or a larger --max-change)")


def check_fresh(target: Target, plan: Plan) -> None:
    """Raise :class:`StalePlan` unless ``plan`` still describes the target."""
    if plan.target != target.name:
        raise StalePlan(f"a plan for {plan.target} cannot be applied to {target.name}")
    vouched = getattr(target, "_planned_under_lock", None)
    if target.locked and vouched is not None and plan.read_digest in vouched:
        return          # read under the lock this target still holds: nobody wrote since
    if plan.read_digest is None:
        raise StalePlan(f"{target.name}: this plan has no read fingerprint; plan and apply "
                        "under one lock")
    now = target.current_digest(plan)
    if now != plan.read_digest:
        raise StalePlan(f"{target.name}: the target changed since the plan was made "
                        f"(fingerprint {plan.read_digest} -> {now}); plan again")


def make_plan(target: Target, model) -> Plan:
    """``target.plan(model)``, remembering that it was read under the target's lock."""
    plan = target.plan(model)
    if target.locked:
        vouched = target.__dict__.setdefault("_planned_under_lock", set())
        vouched.add(plan.read_digest)
    return plan


def apply_plan(target: Target, plan: Plan, *, rollback: bool = True, force: bool = False,
               max_change: float = DEFAULT_MAX_CHANGE,
               on_step: Callable[[Change], None] | None = None) -> ApplyResult:
    """Execute ``plan`` on ``target``: see the module docstring."""
    if not force:
        check_change_size(plan, max_change)
    check_fresh(target, plan)
    result = ApplyResult(plan)
    before = target.counters()
    if not plan.empty:
        target.begin(plan)
        _run(target, plan, result, on_step)
        if not result.ok and rollback:
            _undo(target, plan, result)
    target.finish(plan, result)
    after = target.counters()
    result.writes = {k: after[k] - before.get(k, 0) for k in after}
    return result


def _run(target: Target, plan: Plan, result: ApplyResult, on_step) -> None:
    changes = plan.changes
    i = 0
    while i < len(changes) and result.ok:
        if changes[i].kind in target.batch_kinds:
            j = i
            while (j < len(changes) and j - i < target.batch_size
                   and changes[j].kind in target.batch_kinds):
                j += 1
            batch = list(changes[i:j])
            for change, error in zip(batch, target.apply_batch(batch, plan), strict=True):
                if error is None:
                    result.applied.append(change)
                    if on_step:
                        on_step(change)
                else:
                    result.fail(change, error)
            i = j
            continue
        try:
            target.apply_change(changes[i], plan)
        except Exception as exc:  # any failure stops the plan; it is reported, not hidden
            result.fail(changes[i], exc)
            break
        result.applied.append(changes[i])
        if on_step:
            on_step(changes[i])
        i += 1


def _undo(target: Target, plan: Plan, result: ApplyResult) -> None:
    for change in reversed(result.applied):
        try:
            target.undo_change(change, plan)
            result.undone.append(change)
        except Exception as exc:  # keep undoing the rest; report each failure
            result.undo_errors.append((change, exc))
