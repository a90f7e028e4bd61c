"""One run of a target: lock, plan, (apply), close — the path of every caller.

:func:`drifted` is the same path for a drift check (:meth:`dcnet.target.Target.drifted`).

``elbctl plan|apply``, the etcd agent (``elbctl agent``) and tests all go through
:func:`run`, so every target is locked, planned, guarded and applied the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcnet.metrics.status import recording
from dcnet.plan import Plan
from dcnet.target import registry
from dcnet.target.apply import DEFAULT_MAX_CHANGE, ApplyResult, apply_plan, make_plan

DEFAULT_LOCK_TIMEOUT = 600.0


@dataclass
class Outcome:
    plan: Plan
    result: ApplyResult | None = None

    @property
    def ok(self) -> bool:
        return self.result is None or self.result.ok


def run(target_name: str, model, options: dict | None = None, *, apply: bool,
        lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT, rollback: bool = True,
        force: bool = False, max_change: float = DEFAULT_MAX_CHANGE) -> Outcome:
    """Plan ``model`` on the target (and apply it) under the target's lock."""
    target = registry.create(target_name, **(options or {}))
    try:
        with target.lock(lock_timeout), recording(target.name, target.lock_path(),
                                                   apply) as record:
            plan = record.plan = make_plan(target, model)
            if not apply:
                return Outcome(plan)
            record.result = apply_plan(target, plan, rollback=rollback, force=force,
                                       max_change=max_change)
            return Outcome(plan, record.result)
    finally:
        target.close()


def drifted(target_name: str, pieces, options: dict | None = None, *,
            lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT) -> bool:
    """Whether a plan of the model in ``pieces`` (:class:`dcnet.model.pieces.Pieces`)
    would change the target (:meth:`dcnet.target.Target.drifted`), under its lock and
    recorded as a plan."""
    target = registry.create(target_name, **(options or {}))
    try:
        with target.lock(lock_timeout), recording(target.name, target.lock_path(), False):
            return target.drifted(pieces)
    finally:
        target.close()
