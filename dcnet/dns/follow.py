"""``elbctl dns follow``: DNS that follows the health of the VIPs, one poll at a time.

Each round (:meth:`Follower.round`) reads the health sources (:mod:`dcnet.dns.health`),
turns their counts into one observation per (service, carrier) answer, steps the damping
(:mod:`dcnet.dns.damping`) and, when the set of withdrawn answers changed (or the model
file changed, or every ``resync`` seconds, or the last apply failed: retried after 1 s,
doubling up to ``retry_max``), plans and applies
the ``dns`` target with the model overlaid by that set (:func:`overlay`: the layout
answers a withdrawn answer's carrier with the default line's VIP exactly as for a carrier
marked ``down``, without changing which views share a zone). Plan and apply run in one
locked session of the target through :func:`dcnet.target.apply_plan`, so nothing changes
in BIND when nothing changed.

The damping state is saved in ``state_dir`` (default ``<dns dir>/.dcnet-health``, 0700;
``state.json`` 0600) whenever an answer's state changes, so a restarted loop keeps
withdrawn answers withdrawn and their penalties. ``state_dir/follow.lock`` keeps a
second loop on the same directory away.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dcnet.dns.damping import Damper, Event, Key
from dcnet.dns.health import HealthSource, observe, read_all
from dcnet.model import Model
from dcnet.sysio import flock
from dcnet.sysio.files import atomic_write
from dcnet.target.apply import DEFAULT_MAX_CHANGE, apply_plan, make_plan

STATE_FILE = "state.json"
LOCK_FILE = "follow.lock"


class FollowBusy(RuntimeError):
    """Another ``elbctl dns follow`` holds this state directory."""


def overlay(model: Model, withdrawn: Iterable[Key]) -> Model:
    """``model`` with each withdrawn (service, carrier) answer recorded in
    ``model.dns.withdrawn`` (pure): the DNS layout then answers that carrier's clients with
    the default line's VIPs, and keeps which views share a zone as without withdrawals
    (so a withdrawal or restore is a reload of that view's zone only)."""
    withdrawn = frozenset(withdrawn)
    if not withdrawn:
        return model
    return dataclasses.replace(model, dns=dataclasses.replace(model.dns, withdrawn=withdrawn))


@dataclass
class RoundResult:
    """What one round saw and did."""

    events: list[Event] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)      # sources that could not be read
    withdrawn: frozenset[Key] = frozenset()
    planned: bool = False
    changes: int = 0                # changes the DNS plan held
    applied: bool = False           # a non-empty plan applied successfully
    apply_error: str | None = None


class Follower:
    """The follow loop's state: the model, the sources, the damper, what was applied.

    ``target_factory`` makes a fresh ``dns`` target (:class:`dcnet.dns.backend.DNSTarget`)
    for each apply; ``model_loader`` (optional) reloads the model when ``model_path``'s
    modification time moves; ``clock`` gives wall-clock seconds."""

    def __init__(self, model: Model, sources: Iterable[HealthSource],
                 target_factory: Callable[[], object], state_dir: str, *,
                 log: Callable[[str], None] = print, clock: Callable[[], float] = time.time,
                 resync: float = 60.0, retry_max: float = 30.0,
                 max_change: float = DEFAULT_MAX_CHANGE,
                 force: bool = False, lock_timeout: float = 600.0,
                 model_path: str | None = None,
                 model_loader: Callable[[str], Model] | None = None):
        self.model = model
        self.sources = list(sources)
        self.target_factory = target_factory
        self.state_dir = state_dir
        self.log, self.clock = log, clock
        self.resync, self.max_change, self.force = resync, max_change, force
        self.retry_max = retry_max
        self.retry_after, self.retry_at = 0.0, float("-inf")   # backoff after failures
        self.lock_timeout = lock_timeout
        self.model_path, self.model_loader = model_path, model_loader
        self._model_mtime = self._mtime()
        self.damper = self._load_state()
        self.applied: frozenset[Key] | None = None     # None: nothing applied yet
        self.last_plan = float("-inf")          # clock() of the last plan
        self._saved_marks: dict | None = None
        self._last_errors: list[str] = []
        self.dirty = False          # the model was reloaded and not yet applied
        self._lock_ctx = None
        self.counts = {"rounds": 0, "applies_ok": 0, "applies_failed": 0,
                       "withdrawn": 0, "restored": 0}   # since start (metrics)
        self.source_errors = 0      # sources unreadable at the last round
        self.last_success: float | None = None   # clock() of the last good apply or plan

    # -- state directory

    def _path(self, name: str) -> str:
        return os.path.join(self.state_dir, name)

    def _load_state(self) -> Damper:
        cfg = self.model.dns.health
        try:
            with open(self._path(STATE_FILE), encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            return Damper(cfg)
        try:
            damper = Damper.from_json(cfg, text)
        except ValueError as exc:
            self.log(f"ignoring {self._path(STATE_FILE)}: {exc}")
            return Damper(cfg)
        if damper.withdrawn():
            self.log("restored state: withdrawn " + ", ".join(
                f"{s} on {c}" for s, c in sorted(damper.withdrawn())))
        return damper

    def _save_state(self) -> None:
        """Write the damper when an answer's withdrawn/healthy/suppressed flags changed
        (penalties decay by rule, so they need no write of their own)."""
        flags = {k: (t.withdrawn, t.healthy, t.suppressed)
                 for k, t in self.damper.tracks.items()
                 if t.withdrawn or t.suppressed or t.penalty}
        if self._saved_marks is not None and flags == self._saved_marks:
            return
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        atomic_write(self._path(STATE_FILE), self.damper.to_json(), mode=0o600)
        self._saved_marks = flags

    def __enter__(self) -> Follower:
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        ctx = flock.exclusive(self._path(LOCK_FILE), 0)
        try:
            ctx.__enter__()
        except flock.LockTimeout as exc:
            raise FollowBusy(f"another 'elbctl dns follow' uses {self.state_dir}: "
                             f"{exc}") from None
        self._lock_ctx = ctx
        return self

    def __exit__(self, *exc) -> None:
        if self._lock_ctx is not None:
            self._lock_ctx.__exit__(None, None, None)
            self._lock_ctx = None

    # -- the model

    def _mtime(self) -> float | None:
        if not self.model_path:
            return None
        with contextlib.suppress(OSError):
            return os.stat(self.model_path).st_mtime
        return None

    def _reload_model(self) -> bool:
        """Reload the model when its file changed; True when it was reloaded."""
        mtime = self._mtime()
        if self.model_loader is None or mtime is None or mtime == self._model_mtime:
            return False
        try:
            model = self.model_loader(self.model_path)
        except Exception as exc:        # a broken edit: keep following the last good one
            self.log(f"model {self.model_path} not reloaded: {exc}")
            self._model_mtime = mtime
            return False
        self._model_mtime = mtime
        self.model = model
        self.damper.cfg = model.dns.health
        self.log(f"model {self.model_path} reloaded")
        return True

    # -- one round

    def round(self) -> RoundResult:
        self.dirty = self._reload_model() or self.dirty
        now = self.clock()
        counts, errors = read_all(self.sources, self.model)
        if errors != self._last_errors:         # logged when they change, not each round
            for error in errors:
                self.log(f"health source unreadable (its VIPs count as unknown): {error}")
            if not errors:
                self.log("every health source readable again")
            self._last_errors = errors
        events = self.damper.observe(observe(self.model, counts), now)
        self.counts["rounds"] += 1
        self.source_errors = len(errors)
        for event in events:
            self.log(event.describe())
            self.counts["withdrawn" if event.withdrawn else "restored"] += 1
        withdrawn = self.damper.withdrawn()
        self._save_state()
        result = RoundResult(events, errors, withdrawn)
        due = (withdrawn != self.applied or self.dirty
               or now - self.last_plan >= self.resync)
        if due and now >= self.retry_at:
            self._apply(withdrawn, result, now)
        return result

    def _failed(self, result: RoundResult, now: float) -> None:
        self.counts["applies_failed"] += 1
        self.retry_after = min(max(1.0, self.retry_after * 2), self.retry_max)
        self.retry_at = now + self.retry_after
        self.log(f"dns apply failed (retried in {self.retry_after:g}s): "
                 f"{result.apply_error}")

    def _apply(self, withdrawn: frozenset[Key], result: RoundResult, now: float) -> None:
        result.planned = True
        self.last_plan = now
        target = self.target_factory()
        try:
            with target.lock(self.lock_timeout):
                plan = make_plan(target, overlay(self.model, withdrawn))
                result.changes = len(plan.changes)
                if plan.empty:
                    self.applied, self.dirty, self.retry_after = withdrawn, False, 0.0
                    self.last_success = now
                    return
                outcome = apply_plan(target, plan, force=self.force,
                                     max_change=self.max_change)
        except Exception as exc:        # named down, refused plan: retried next round
            result.apply_error = f"{type(exc).__name__}: {exc}"
            self._failed(result, now)
            return
        finally:
            close = getattr(target, "close", None)
            if close:
                close()
        if outcome.ok:
            self.applied, self.dirty, self.retry_after = withdrawn, False, 0.0
            self.last_success = now
            self.counts["applies_ok"] += 1
            result.applied = True
            self.log(f"dns applied {len(outcome.applied)} change(s): "
                     + ", ".join(c.describe() for c in outcome.applied))
        else:
            result.apply_error = f"{outcome.failed.describe()}: {outcome.error}"
            self._failed(result, now)

    def run(self, interval: float, rounds: int | None = None,
            stop: Callable[[], bool] = lambda: False) -> None:
        """Round after round, ``interval`` seconds apart (``rounds``: at most that many)."""
        done = 0
        while not stop() and (rounds is None or done < rounds):
            started = time.monotonic()
            self.round()
            done += 1
            if rounds is not None and done >= rounds:
                break
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
