"""The health state file: which checks are down, written by ``elbctl health`` and read
by the target it serves (``<state dir>/health-<netns or host>.json``).

``{"version": 1, "checker": PID, "written": UNIX TIME, "down": {CHECK TEXT: DETAIL}}``,
written atomically. A missing file means every server is up (no checker has run); an
unreadable one is an error naming the file, never "all up" by accident.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

from dcnet.sysio.files import atomic_write

VERSION = 1


class HealthFileError(ValueError):
    pass


def path_of(state_dir: str, netns: str | None) -> str:
    return os.path.join(state_dir, f"health-{netns or 'host'}.json")


def read_down(path: str) -> frozenset[str]:
    """The texts of the checks that are down (empty without a file)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return frozenset()
    except (OSError, ValueError) as exc:
        raise HealthFileError(f"{path}: unreadable health state ({exc})") from None
    down = data.get("down") if isinstance(data, dict) else None
    if not isinstance(down, dict) or data.get("version") != VERSION:
        raise HealthFileError(f"{path}: not a version {VERSION} health state")
    return frozenset(str(k) for k in down)


def write(path: str, down: Mapping[str, str]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write(path, json.dumps({"version": VERSION, "checker": os.getpid(),
                                   "written": round(time.time(), 3),
                                   "down": dict(sorted(down.items()))}, indent=1) + "\n")
