"""The fault journal: every fault is written here (and fsynced) BEFORE it is applied, and
marked reverted after; what is applied but not reverted is what a crashed runner left.

It owns the journal file (JSON lines: ``{"op": "apply", "id": N, "fault": {...}}`` and
``{"op": "reverted", "id": N}``, file 0600 in a 0700 directory) and its lock (an flock
beside it, held by a runner for its whole run and by ``recover``; the kernel releases it
when a runner is SIGKILLed). A fault record holds everything needed to revert it, so a
new process can revert it (:func:`dcnet.chaos.faults.revert`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

from dcnet.sysio import flock

DEFAULT_JOURNAL = "/var/lib/dcnet/chaos/journal.jsonl"
ENV_JOURNAL = "DCNET_CHAOS_JOURNAL"


class Journal:
    def __init__(self, path: str):
        self.path = path

    @contextlib.contextmanager
    def locked(self, timeout: float | None = 10.0) -> Iterator[Journal]:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), mode=0o700, exist_ok=True)
        with flock.exclusive(self.path + ".lock", timeout):
            yield self

    def _append(self, entry: dict) -> None:
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line            # after a line torn by a crash
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> list[dict]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:      # a line torn by a crash mid-write: nothing was applied
                continue
        return out

    def record(self, fault: dict) -> int:
        """Journal ``fault`` before it is applied; its id."""
        ids = [e.get("id", 0) for e in self.entries()]
        number = max(ids, default=0) + 1
        self._append({"op": "apply", "id": number, "fault": fault})
        return number

    def reverted(self, number: int) -> None:
        self._append({"op": "reverted", "id": number})

    def pending(self) -> list[tuple[int, dict]]:
        """Faults applied (or about to be) and not reverted, newest first."""
        done = {e["id"] for e in self.entries() if e.get("op") == "reverted"}
        return [(e["id"], e["fault"]) for e in reversed(self.entries())
                if e.get("op") == "apply" and e["id"] not in done]

    def clear_if_done(self) -> bool:
        """Remove the journal when nothing is pending; True when it is gone."""
        if self.pending():
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        return True
