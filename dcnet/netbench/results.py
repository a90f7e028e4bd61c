"""Result files: one versioned JSON document per run directory, rewritten after each sample.

``DIR/results.json`` holds the format name and version, the run's state (``running``,
``complete``, ``interrupted``, ``failed``), the definition as loaded, the environment,
every mode's status (``ok``, ``unavailable`` with the reason, ``failed`` with the error,
its lab prefixes and interfaces), and every sample (warm-up ones flagged). It is written
atomically (temporary file + rename) after every sample, so a run stopped by Ctrl-C, by
SIGTERM or even by SIGKILL leaves a valid file holding what was measured until then.
Raw per-message latencies, when kept, go to ``DIR/raw/*.txt.gz``.

Version 2 adds the address family: the definition's ``families``, every sample's
``family`` (``ipv4``/``ipv6``), and per mode ``families`` with each family's status
(``ok``; ``skipped`` with the reason, e.g. a mode without IPv6) and the tests skipped
over it. Version 1 files (IPv4 only) are still read: ``load`` fills those fields in.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from dcnet.sysio.files import atomic_write

FORMAT = "dcnet-netbench-results"
VERSION = 2
READ_VERSIONS = (1, 2)
RESULTS_FILE = "results.json"
STATES = ("running", "complete", "interrupted", "failed")


class ResultsError(ValueError):
    """A result file that cannot be read: missing, not JSON, wrong format or version."""


@dataclass
class Sample:
    """One client run of one test on one mode in one round."""

    mode: str
    test: str
    kind: str
    round: int
    warmup: bool
    order: int
    started: float
    wall_s: float
    ok: bool
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)
    load_average: list[float] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    family: str = "ipv4"


def results_path(directory: str) -> str:
    return os.path.join(directory, RESULTS_FILE)


class ResultFile:
    """The document of a live run; ``write()`` persists it atomically."""

    def __init__(self, directory: str, definition: dict[str, Any],
                 environment: dict[str, Any], command: list[str] | None = None):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.data: dict[str, Any] = {
            "format": FORMAT, "version": VERSION,
            "run": {"state": "running", "started": time.time(), "finished": None,
                    "command": command or [], "errors": []},
            "definition": definition,
            "environment": environment,
            "modes": {},
            "samples": [],
        }

    @property
    def path(self) -> str:
        return results_path(self.directory)

    def set_mode(self, name: str, **info: Any) -> None:
        self.data["modes"].setdefault(name, {}).update(info)

    def add_sample(self, sample: Sample) -> None:
        self.data["samples"].append(asdict(sample))
        self.write()

    def add_error(self, message: str) -> None:
        self.data["run"]["errors"].append(message)

    def finish(self, state: str) -> None:
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}")
        self.data["run"]["state"] = state
        self.data["run"]["finished"] = time.time()
        self.data["environment"]["load_average_end"] = _loadavg()
        self.write()

    def write(self) -> None:
        atomic_write(self.path, json.dumps(self.data, indent=1, sort_keys=False,
                                           allow_nan=True) + "\n", fsync=False)


def _loadavg() -> list[str]:
    try:
        with open("/proc/loadavg") as handle:
            return handle.read().split()[:3]
    except OSError:
        return []


def load(path: str) -> dict[str, Any]:
    """A result document from a run directory or a results.json path, checked."""
    if os.path.isdir(path):
        path = results_path(path)
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such result file") from None
    except ValueError as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ResultsError(f"{path}: not a netbench result file (format is not {FORMAT!r})")
    if data.get("version") not in READ_VERSIONS:
        raise ResultsError(f"{path}: result format version {data.get('version')!r} is not "
                           f"supported (this netbench reads versions "
                           f"{', '.join(map(str, READ_VERSIONS))})")
    for key in ("run", "definition", "environment", "modes", "samples"):
        if key not in data:
            raise ResultsError(f"{path}: result file lacks '{key}'")
    upgrade(data)
    data["_path"] = path
    return data


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """Fill in what a version 1 document (IPv4 only) lacks; idempotent."""
    if isinstance(data.get("definition"), dict):
        data["definition"].setdefault("families", ["ipv4"])
    for sample in data.get("samples") or []:
        if isinstance(sample, dict):
            sample.setdefault("family", "ipv4")
    return data


def families(data: dict[str, Any]) -> list[str]:
    """The address families of a run, in definition order (``["ipv4"]`` before v2)."""
    return list(data["definition"].get("families") or ["ipv4"])


def family_of(sample: dict[str, Any]) -> str:
    return sample.get("family") or "ipv4"


def family_status(data: dict[str, Any], mode: str, family: str) -> tuple[str, str]:
    """(status, reason) of ``mode`` over ``family``: the mode's own status unless the
    family was skipped (or the mode is ok and the file predates families)."""
    info = data["modes"].get(mode, {})
    status = info.get("status", "not built")
    if status != "ok":
        return status, info.get("reason", "")
    entry = (info.get("families") or {}).get(family)
    if entry is None:
        return ("ok", "") if family == "ipv4" else ("not built", "")
    return entry.get("status", "ok"), entry.get("reason", "")


def measured(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The successful, non-warm-up samples of a result document."""
    return [s for s in data["samples"] if s["ok"] and not s["warmup"]]
