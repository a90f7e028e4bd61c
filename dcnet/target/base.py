"""The one contract every ELB target implements (LVS, HAProxy, DNS, nftables, ...).

A target is a class with:

- ``name`` and ``kind_order`` (the kinds of objects it owns, in creation order);
- ``options``: its settings, typed, in one place (:class:`Option`); ``elbctl`` builds its
  command-line flags from them and the etcd agent its keywords; the constructor takes
  them as keyword arguments;
- a session: :meth:`Target.lock` (exclusive for the whole read -> apply of one run,
  bounded wait, names the holder), :meth:`Target.close`;
- :meth:`Target.plan` ``(model) -> Plan``: reads the current state, diffs it (pure)
  against the desired one and returns a self-sufficient :class:`dcnet.plan.Plan`; the
  default implementation does exactly that from :meth:`read` and :meth:`desired`;
- apply hooks used by :func:`dcnet.target.apply_plan` (which owns ordering, batching,
  stop-on-failure, undo and the change guard): :meth:`begin`, :meth:`apply_change`,
  :meth:`apply_batch`, :meth:`undo_change`, :meth:`finish`, plus
  :meth:`current_digest` (is this plan stale?) and :meth:`counters` (writes issued);
- :meth:`Target.drifted` ``(pieces) -> bool``: whether :meth:`plan` of the model would
  hold any change, the model given in pieces (:class:`dcnet.model.pieces.Pieces`) so a
  target may check it a piece at a time (the exporter's drift check, every
  ``--drift-interval``: docs/metrics.md); the default plans the whole model.

Applying a plan uses only the plan (its changes and payload) and the target's I/O
handles: nothing the target remembered from planning.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from dcnet.plan import Change, Plan, State, diff, state_digest
from dcnet.sysio import flock


class TargetError(RuntimeError):
    """A refusal or failure a target reports as one clear line (exit 1)."""

    exit_code = 1


class TargetUnavailable(TargetError):
    """The target cannot be reached or locked (exit 3)."""

    exit_code = 3


class StalePlan(TargetError):
    """The target changed since the plan was read: plan again."""


class TooMuchChange(TargetError):
    """The plan updates or deletes more than the allowed share of the owned objects."""


@dataclass(frozen=True)
class Option:
    """One setting of a target: keyword ``name``, flag ``--<flag>`` (empty: set by a
    generic elbctl flag of the same name, such as ``--force``), environment fallback."""

    name: str
    flag: str
    help: str
    type: type = str
    default: Any = None
    envvar: str | None = None
    is_flag: bool = False
    path: bool = False      # a filesystem path (the CLI checks nothing, only says so)


@dataclass(frozen=True)
class Snapshot:
    """What one read found: the owned state, notes, and its fingerprint."""

    state: State
    notes: tuple[str, ...] = ()
    digest: str | None = None


class Target(ABC):
    """Base class of every target; see the module docstring for the contract."""

    name: ClassVar[str]
    kind_order: ClassVar[tuple[str, ...]]
    options: ClassVar[tuple[Option, ...]] = ()
    batch_kinds: ClassVar[frozenset[str]] = frozenset()   # kinds apply_batch may group
    batch_size: ClassVar[int] = 1
    #: exception types of this target that mean "refused / failed" (exit 1) and
    #: "unavailable" (exit 3); the CLI and the agent report them as one line
    refused_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    unavailable_errors: ClassVar[tuple[type[BaseException], ...]] = ()

    _lock_depth = 0

    # ------------------------------------------------------------------ session

    def lock_path(self) -> str | None:
        """The lock file of this target instance (None: the target needs none)."""
        return None

    @contextlib.contextmanager
    def lock(self, timeout: float | None = 600.0) -> Iterator[None]:
        """Hold the target's exclusive lock for one run (re-entrant in one instance)."""
        path = self.lock_path()
        if path is None or self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        try:
            ctx = flock.exclusive(path, timeout)
            ctx.__enter__()
        except flock.LockTimeout as exc:
            raise TargetUnavailable(f"{self.name}: {exc}") from None
        self._lock_depth = 1
        try:
            yield
        finally:
            self._lock_depth = 0
            ctx.__exit__(None, None, None)

    @property
    def locked(self) -> bool:
        return self._lock_depth > 0

    def close(self) -> None:
        """Release I/O handles (sockets, netlink)."""
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ read and plan

    @abstractmethod
    def read(self, model) -> Snapshot:
        """The current state of what this target owns (``model`` may scope the read)."""

    @abstractmethod
    def desired(self, model, current: Snapshot) -> State:
        """The state the model asks for (pure given the snapshot)."""

    def payload(self, model, current: Snapshot, desired: State) -> Any:
        """What applying the plan will need besides its changes (immutable)."""
        return None

    def plan(self, model) -> Plan:
        current = self.read(model)
        wanted = self.desired(model, current)
        changes = diff(current.state, wanted)
        digest = current.digest if current.digest is not None else state_digest(current.state)
        return Plan.build(self.name, changes, self.kind_order, current.notes,
                          read_digest=digest, objects=len(current.state),
                          payload=self.payload(model, current, wanted))

    def drifted(self, pieces) -> bool:
        """Whether :meth:`plan` of the model in ``pieces`` (:class:`dcnet.model.pieces.
        Pieces`) would hold any change: the same answer as ``not plan(model).empty``,
        always (the contract tests hold every target to it). A target that can check a
        piece at a time overrides this, so a drift check need not hold the whole model
        nor the whole desired state; this default plans the whole model."""
        return self.planned_drift(pieces)

    def planned_drift(self, pieces, *, record: bool = False) -> bool:
        """``not plan(model).empty`` of the whole model in ``pieces``; with ``record``, an
        empty plan is finished as an apply of it would finish it (:meth:`finish`), so the
        records a target keeps of its last clean apply vouch for what this plan read and
        its next drift checks can go piecewise again."""
        plan = self.plan(pieces.whole())
        if record and plan.empty:
            from dcnet.target.apply import ApplyResult  # apply imports this module

            self.finish(plan, ApplyResult(plan))
        return not plan.empty

    def current_digest(self, plan: Plan) -> str | None:
        """The fingerprint the target has now, comparable with ``plan.read_digest``."""
        return None

    # ------------------------------------------------------------------ apply hooks

    def begin(self, plan: Plan) -> None:
        """Before the first change of a non-empty plan (e.g. record intentions)."""
        return None

    @abstractmethod
    def apply_change(self, change: Change, plan: Plan) -> None:
        """Carry out one change; raise on failure, leaving nothing half-done."""

    def apply_batch(self, changes: list[Change], plan: Plan) -> list[BaseException | None]:
        """Carry out consecutive changes of ``batch_kinds`` together; one outcome each."""
        out: list[BaseException | None] = []
        for change in changes:
            try:
                self.apply_change(change, plan)
                out.append(None)
            except Exception as exc:  # reported per change by apply_plan
                out.append(exc)
        return out

    def undo_change(self, change: Change, plan: Plan) -> None:
        self.apply_change(change.inverse(), plan)

    def finish(self, plan: Plan, result) -> None:
        """After the last change (or the failure and its undo)."""
        return None

    def counters(self) -> dict[str, int]:
        """Write counters (monotonic); apply reports the difference over one apply."""
        return {}
