"""The target contract: one way for every ELB back end to read, plan, lock and apply.

- :mod:`dcnet.target.base`: :class:`Target` (what a back end implements), :class:`Option`,
  :class:`Snapshot` and the errors;
- :mod:`dcnet.target.apply`: :func:`apply_plan` (guard, staleness, order, batches, undo);
- :mod:`dcnet.target.registry`: targets by name;
- :mod:`dcnet.target.session`: :func:`run`, one locked plan/apply of a model.

See docs/architecture.md for the layers and the path of one change.
"""

from dcnet.target.apply import (
    DEFAULT_MAX_CHANGE,
    ApplyResult,
    apply_plan,
    check_change_size,
    make_plan,
)
from dcnet.target.base import (
    Option,
    Snapshot,
    StalePlan,
    Target,
    TargetError,
    TargetUnavailable,
    TooMuchChange,
)

__all__ = ["DEFAULT_MAX_CHANGE", "ApplyResult", "Option", "Snapshot", "StalePlan", "Target",
           "TargetError", "TargetUnavailable", "TooMuchChange", "apply_plan",
           "check_change_size", "make_plan"]
