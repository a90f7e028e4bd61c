"""Damping of health-driven DNS (pure): when a carrier's answer is withdrawn and restored.

One :class:`Track` per (service, carrier) answer, stepped by :func:`step` with each poll's
observation of that carrier's VIP: healthy (True), no healthy real server (False) or
unknown (None: no source covers it, or the source could not be read). The rules, with
the settings of the model's ``dns.health`` (:class:`dcnet.model.dns_health.DNSHealth`):

- an answer is **withdrawn** once the VIP has been observed unhealthy continuously for
  ``down_after`` seconds, and **restored** once it has been observed healthy continuously
  for ``up_after`` seconds (longer: coming back is not urgent, going away is);
- a **flap** (an observation healthy -> unhealthy) adds ``flap_penalty`` to the answer's
  penalty, which halves every ``half_life`` seconds and is capped at ``max_penalty``
  (BGP route-flap damping, RFC 2439). From ``suppress`` on the answer is *suppressed*: it
  is withdrawn at once and stays withdrawn, healthy or not, until the penalty has
  decayed below ``reuse``;
- an unknown observation changes nothing but breaks continuity (the next known
  observation starts a new run).

Time is wall-clock seconds (``time.time()`` in the loop, simulated in tests), so the
state (:meth:`Damper.to_json`) survives a restart of the loop: a withdrawn answer stays
withdrawn and its penalty keeps decaying; runs restart after a restart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace

from dcnet.model.dns_health import DNSHealth

Key = tuple[str, str]          # (service JOBNAME, carrier)


@dataclass(frozen=True)
class Track:
    """What damping knows about one answer."""

    withdrawn: bool = False
    healthy: bool | None = None      # the last observation
    since: float | None = None       # start of the current run of equal observations
    penalty: float = 0.0             # flap penalty at ``penalty_at``
    penalty_at: float = 0.0
    suppressed: bool = False


@dataclass(frozen=True)
class Event:
    """An answer withdrawn or restored, and why."""

    key: Key
    withdrawn: bool
    reason: str

    def describe(self) -> str:
        service, carrier = self.key
        what = "withdrawn" if self.withdrawn else "restored"
        return f"{service} on {carrier}: {what} ({self.reason})"


def decayed(penalty: float, elapsed: float, half_life: float) -> float:
    """``penalty`` after ``elapsed`` seconds of exponential decay."""
    return penalty * 0.5 ** (max(elapsed, 0.0) / half_life)


def step(track: Track, healthy: bool | None, now: float,
         cfg: DNSHealth) -> tuple[Track, str | None]:
    """The track after one observation at ``now``, and the reason when ``withdrawn``
    changed (None: it did not)."""
    penalty = decayed(track.penalty, now - track.penalty_at, cfg.half_life)
    suppressed = track.suppressed and penalty >= cfg.reuse
    if healthy is None:
        return replace(track, healthy=None, since=None, penalty=penalty, penalty_at=now,
                       suppressed=suppressed), None
    since = track.since if (healthy == track.healthy and track.since is not None) else now
    if track.healthy is True and healthy is False:
        penalty = min(penalty + cfg.flap_penalty, cfg.max_penalty)
        suppressed = suppressed or penalty >= cfg.suppress
    withdrawn, reason = track.withdrawn, None
    run = now - since
    if suppressed:
        withdrawn = True
        reason = f"flapping: penalty {penalty:.0f} >= suppress {cfg.suppress:g}"
    elif not healthy and run >= cfg.down_after:
        withdrawn = True
        reason = f"no healthy real server for {run:.1f}s"
    elif healthy and run >= cfg.up_after:
        withdrawn = False
        reason = (f"healthy for {run:.1f}s" + (f", penalty {penalty:.0f} < reuse "
                  f"{cfg.reuse:g}" if track.suppressed else ""))
    new = Track(withdrawn, healthy, since, penalty, now, suppressed)
    return new, reason if withdrawn != track.withdrawn else None


class Damper:
    """The tracks of every answer that follows health, stepped one poll at a time."""

    def __init__(self, cfg: DNSHealth, tracks: Mapping[Key, Track] | None = None):
        self.cfg = cfg
        self.tracks: dict[Key, Track] = dict(tracks or {})

    def observe(self, observations: Mapping[Key, bool | None], now: float) -> list[Event]:
        """Step every answer in ``observations``; answers not in it are forgotten (the
        service or carrier left the model). Returns the withdrawals and restorations."""
        events = []
        tracks = {}
        for key in sorted(observations):
            track, reason = step(self.tracks.get(key, Track()), observations[key], now,
                                 self.cfg)
            tracks[key] = track
            if reason is not None:
                events.append(Event(key, track.withdrawn, reason))
        self.tracks = tracks
        return events

    def withdrawn(self) -> frozenset[Key]:
        return frozenset(k for k, t in self.tracks.items() if t.withdrawn)

    # -- persistence (the loop writes it to its state file)

    def to_json(self) -> str:
        rows = [{"service": s, "carrier": c, "withdrawn": t.withdrawn, "healthy": t.healthy,
                 "penalty": t.penalty, "penalty_at": t.penalty_at,
                 "suppressed": t.suppressed} for (s, c), t in sorted(self.tracks.items())]
        return json.dumps({"version": 1, "tracks": rows}, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, cfg: DNSHealth, text: str) -> Damper:
        """The damper a previous loop saved; runs start anew (``since`` is not kept).
        ValueError when ``text`` is not such a state."""
        try:
            doc = json.loads(text)
            tracks = {(r["service"], r["carrier"]): Track(
                bool(r["withdrawn"]), r["healthy"], None, float(r["penalty"]),
                float(r["penalty_at"]), bool(r["suppressed"])) for r in doc["tracks"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a DNS health state: {exc}") from None
        return cls(cfg, tracks)
