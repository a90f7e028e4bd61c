"""The janitor (``elbctl chaos unused``): what a target runs that the model no longer
declares (HAProxy backends and servers, IPVS services, nft services, DNS names...).

Unused objects are the delete changes of the target's plan of the model (made under the
target's lock through :func:`dcnet.target.session.run`, like every caller). Removing
them goes through the owning target too: the plan is applied by ``session.run``, and
only when it creates nothing (a plan with creates means the model wants more than a
clean-up: that is ``elbctl apply``'s job); updates it carries along (e.g. HAProxy's
configuration file, a slot put into maintenance) are listed with the removal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dcnet.model import Model
from dcnet.plan import Action, Change
from dcnet.target import session


@dataclass
class Report:
    target: str
    unused: list[Change]
    carried: list[Change]                   # updates applied along with the removal
    blocked: list[Change] = field(default_factory=list)   # creates: not a clean-up
    applied: bool = False
    ok: bool = True
    error: str = ""

    def to_dict(self) -> dict:
        return {"target": self.target, "unused": [c.to_dict() for c in self.unused],
                "carried": [c.to_dict() for c in self.carried],
                "blocked": [c.to_dict() for c in self.blocked], "applied": self.applied,
                "ok": self.ok, "error": self.error}

    def to_text(self) -> str:
        lines = [f"{self.target}: {len(self.unused)} unused"]
        lines += [f"  {c.describe()}" for c in self.unused]
        lines += [f"  carried along: {c.describe()}" for c in self.carried]
        if self.blocked:
            lines.append(f"  not removed: the plan also creates {len(self.blocked)} "
                         "object(s); run elbctl apply")
        if self.applied:
            lines.append("  removed" if self.ok else f"  removal failed: {self.error}")
        return "\n".join(lines)


def split(changes: tuple[Change, ...]) -> tuple[list[Change], list[Change], list[Change]]:
    """(deletes, updates, creates) of a plan (pure)."""
    by = {a: [c for c in changes if c.action is a] for a in Action}
    return by[Action.DELETE], by[Action.UPDATE], by[Action.CREATE]


def unused(target: str, model: Model, options: dict, *, lock_timeout: float,
           apply: bool = False, force: bool = False) -> Report:
    outcome = session.run(target, model, options, apply=False, lock_timeout=lock_timeout,
                          force=force)
    deletes, updates, creates = split(outcome.plan.changes)
    report = Report(target, deletes, updates if deletes else [], creates)
    if not apply or not deletes or creates:
        return report
    done = session.run(target, model, options, apply=True, lock_timeout=lock_timeout,
                       force=force)
    deletes, updates, creates = split(done.plan.changes)
    report.unused, report.carried, report.blocked = deletes, updates, creates
    report.applied, report.ok = True, done.result.ok
    report.error = str(done.result.error or "")
    return report
