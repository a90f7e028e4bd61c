"""The janitor's idle-services part: services of the model that have had no real server
for ``days`` days (``elbctl chaos unused -f MODEL --days N``).

Since when a service has had none comes from the janitor's own state file (default
``/var/lib/dcnet/chaos/janitor-state.json``, ``$DCNET_JANITOR_STATE``), updated on each
run: per model file, every service seen without a real server and the time of the first
run that saw it so; a run that sees it with servers (or without the service) drops it.
Not from the etcd store's model history: registered backends (``elbctl backend add``,
``dcnet-init``'s hooks) come and go in the registry, which keeps no history, so the
model revisions alone would call a service whose servers are all registered "empty since
it was first pushed". What this costs: the state knows only what the runs saw (the
first run starts every clock; servers that came and went between two runs are not
seen), so run it regularly (e.g. daily) and read "since" as "at least since".

:func:`track` and :func:`idle` are pure (the clock is passed in). The services belong to
the model (an operator's file): they are listed, never removed, even with ``--apply``.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass

from dcnet.model import Model
from dcnet.sysio import flock
from dcnet.sysio.files import atomic_write

DEFAULT_STATE = "/var/lib/dcnet/chaos/janitor-state.json"
ENV_STATE = "DCNET_JANITOR_STATE"
STATE_VERSION = 1
DAY = 86400.0


def track(known: dict[str, float], servers: dict[str, int], now: float) -> dict[str, float]:
    """The new ``{service: empty since}`` of one model: every service with no real server
    keeps its earlier time, or starts at ``now``; the others are dropped (pure)."""
    return {name: known.get(name, now) for name, count in servers.items() if count == 0}


def idle(empty: dict[str, float], now: float, days: float) -> list[dict]:
    """The services empty for at least ``days`` days, each ``{service, since, days}``,
    longest first (pure)."""
    out = [{"service": name, "since": _iso(since), "days": round((now - since) / DAY, 2)}
           for name, since in empty.items() if now - since >= days * DAY]
    return sorted(out, key=lambda item: (-item["days"], item["service"]))


def _iso(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat(timespec="seconds")


@dataclass
class IdleReport:
    services: list[dict]        # empty for >= days: service, since, days
    watching: list[dict]        # empty, not for long enough yet
    days: float
    state: str                  # the state file
    applied: bool = False       # --apply was asked: still nothing removed

    def to_dict(self) -> dict:
        return {"part": "idle", "days": self.days, "services": self.services,
                "watching": self.watching, "state": self.state, "applied": self.applied}

    def to_text(self) -> str:
        lines = [f"model: {len(self.services)} services with no real server for "
                 f"{self.days:g} days or more (since: the first janitor run that saw "
                 f"it empty, state {self.state})"]
        lines += [f"  - {s['service']}: no real server since {s['since']} ({s['days']} days)"
                  for s in self.services]
        if self.watching:
            lines.append(f"  {len(self.watching)} more without a real server for less: "
                         + ", ".join(f"{s['service']} (since {s['since']})"
                                     for s in self.watching))
        if self.services and self.applied:
            lines.append("  not removed: the model owns these services; drop them from "
                         "it, then elbctl apply")
        return "\n".join(lines)


def unused(model: Model, days: float, state_path: str, now: float,
           apply: bool = False) -> IdleReport:
    """Update the state file with this run and list the services idle for ``days``."""
    key = os.path.abspath(model.source) if model.source else "<model>"
    servers = {s.name: len(s.real_servers) for s in model.services}
    directory = os.path.dirname(state_path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    with flock.exclusive(state_path + ".lock", timeout=30):
        state = _read(state_path)
        empty = track(state["models"].get(key, {}), servers, now)
        state["models"][key] = empty
        atomic_write(state_path, json.dumps(state, sort_keys=True, indent=1) + "\n",
                     mode=0o600)
    found = idle(empty, now, days)
    listed = {s["service"] for s in found}
    watching = [s for s in idle(empty, now, 0) if s["service"] not in listed]
    return IdleReport(found, watching, days, state_path, applied=apply)


def _read(path: str) -> dict:
    """The state (a fresh one when the file is missing or not this format)."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        data = None
    except (OSError, ValueError) as exc:
        raise ValueError(f"janitor state {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION \
            or not isinstance(data.get("models"), dict):
        return {"version": STATE_VERSION, "models": {}}
    models = {k: {n: float(t) for n, t in v.items() if isinstance(t, int | float)}
              for k, v in data["models"].items() if isinstance(v, dict)}
    return {"version": STATE_VERSION, "models": models}
