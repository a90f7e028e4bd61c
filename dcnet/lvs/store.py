"""elbctl's durable LVS state directory: the lock, the dynamic registry, the drain set.

Files under the state directory (``--lvs-state-dir``, ``$DCNET_LVS_STATE_DIR``, default
``/var/lib/dcnet/lvs``):

- ``lock``: ``flock``-ed exclusively (:mod:`dcnet.sysio.flock`) by every
  ``elbctl plan|apply --target lvs`` (from its read to its last write) and by every
  ``elbctl backend add|remove|drain``, so they never interleave;
- ``registry.json``: real servers added, drained or removed by ``elbctl backend``, per
  service; a full apply merges it into the model so it never undoes them;
- ``drain.json``: dests being drained and their deadlines (survives restarts);
- ``layouts.json``: the services of the last applied model, for ``elbctl backend``;
- ``settings.json``: the last applied model's ``lvs.drain_deadline``, for ``elbctl
  backend drain|remove`` (:mod:`dcnet.lvs.dynamic`);
- ``ipvs_fingerprint.json``: the fingerprint pair recorded after the last clean apply
  (digest of the masked ``/proc/net/ip_vs`` text, digest of the desired IPVS inputs),
  removed before every apply's first write (see :mod:`dcnet.lvs.fingerprint`);
- ``ipvs_services.json``: the incremental sync's per-service record, written and removed
  with it, by :mod:`dcnet.lvs.incremental` (not through this class).

Every file is replaced atomically (write, fsync, rename, fsync the directory), so a
crash leaves the old or the new version, never a torn one. The directory is 0700, the
lock and every file 0600 (issue #14).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

from dcnet.lvs.layout import ServiceLayout
from dcnet.sysio import flock
from dcnet.sysio.files import atomic_write
from dcnet.sysio.flock import LockTimeout

__all__ = ["DEFAULT_DIR", "LockTimeout", "Store"]

DEFAULT_DIR = "/var/lib/dcnet/lvs"


class Store:
    def __init__(self, directory: str | None = None):
        self.directory = directory or self.default_dir()

    @staticmethod
    def default_dir() -> str:
        return os.environ.get("DCNET_LVS_STATE_DIR") or DEFAULT_DIR

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def lock_path(self) -> str:
        """The lock file: ``elbctl backend`` and every ``plan|apply --target lvs`` run
        (:meth:`dcnet.target.Target.lock`) hold it through :mod:`dcnet.sysio.flock`."""
        return self.path("lock")

    @contextlib.contextmanager
    def locked(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the state directory's exclusive lock (waiting at most ``timeout`` s;
        :class:`dcnet.sysio.flock.LockTimeout` names the holder)."""
        self._make_directory()
        with flock.exclusive(self.lock_path(), timeout):
            yield

    def _make_directory(self) -> None:
        """The directory, 0700 (made so, or tightened if it is ours and looser)."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        info = os.stat(self.directory)
        if info.st_mode & 0o077 and info.st_uid == os.geteuid():
            os.chmod(self.directory, 0o700)

    # -- JSON files

    def _read(self, name: str, default: Any) -> Any:
        try:
            with open(self.path(name), encoding="utf-8") as fh:
                return json.load(fh)
        except FileNotFoundError:
            return default

    def _write(self, name: str, data: Any, indent: int | None = 1) -> None:
        # indent=None: json's C encoder (an indent always runs the pure-Python one)
        self._make_directory()
        atomic_write(self.path(name), json.dumps(data, indent=indent, sort_keys=True),
                     mode=0o600, fsync=True)

    # -- registry: {service: {ident: {"weight": int, "state": str}}}

    def registry(self) -> dict[str, dict[str, dict]]:
        return self._read("registry.json", {}).get("services", {})

    def save_registry(self, services: dict[str, dict[str, dict]]) -> None:
        self._write("registry.json", {"version": 1, "services": services})

    # -- drain set: {dest key: deadline}

    def drain_set(self) -> dict[tuple, float]:
        items = self._read("drain.json", {}).get("draining", [])
        return {tuple(item["key"]): float(item["deadline"]) for item in items}

    def save_drain_set(self, draining: dict[tuple, float]) -> None:
        if not draining and not os.path.exists(self.path("drain.json")):
            return
        items = [{"key": list(k), "deadline": d} for k, d in sorted(draining.items(),
                                                                    key=lambda kv: str(kv[0]))]
        self._write("drain.json", {"version": 1, "draining": items})

    # -- layouts of the last applied model

    def layouts(self) -> tuple[dict[str, ServiceLayout], int] | None:
        """The last applied services by name, and the model's drain_seconds."""
        data = self._read("layouts.json", None)
        if data is None:
            return None
        return ({s["name"]: ServiceLayout.from_json(s) for s in data["services"]},
                data["drain_seconds"])

    def save_layouts(self, layouts: tuple[ServiceLayout, ...], drain_seconds: int) -> None:
        data = {"version": 1, "services": [s.to_json() for s in layouts],
                "drain_seconds": drain_seconds}
        if self._read("layouts.json", None) != data:
            self._write("layouts.json", data, indent=None)   # 10,000 layouts: 0.4 s, not 3

    # -- settings of the last applied model that elbctl backend needs

    def drain_deadline(self, default: int = 30) -> int:
        """The last applied model's ``lvs.drain_deadline`` (``default`` before any)."""
        return int(self._read("settings.json", {}).get("drain_deadline", default))

    def save_drain_deadline(self, seconds: int) -> None:
        data = {"version": 1, "drain_deadline": seconds}
        if self._read("settings.json", None) != data:
            self._write("settings.json", data)

    # -- IPVS fingerprint of the last clean apply (dcnet.lvs.fingerprint)

    def fingerprint(self) -> dict | None:
        """The recorded fingerprint, or None when there is none or it is unreadable (a
        corrupt record only costs one full read)."""
        try:
            data = self._read("ipvs_fingerprint.json", None)
        except (ValueError, OSError):
            return None
        return data if isinstance(data, dict) else None

    def save_fingerprint(self, record: dict | None) -> None:
        """Record ``record`` atomically; None removes the record (if there is one)."""
        if record is not None:
            self._write("ipvs_fingerprint.json", record)
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path("ipvs_fingerprint.json"))
