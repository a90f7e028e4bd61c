"""The durable backend registry of targets other than LVS: what ``elbctl backend`` did.

``elbctl backend add|remove|drain`` (container init hooks) changes one real server of one
service without the model file. For a target that keeps this file (HAProxy today) it
lives in the directory of the target's lock file (``<dir>/<target>.backends.json``),
next to the last model the target applied (``<dir>/<target>.model.pickle``), and is read
and written only under the target's lock (:meth:`dcnet.target.Target.lock`).

Semantics are LVS's (:mod:`dcnet.lvs.dynamic`, :mod:`dcnet.lvs.store`): per service
JOBNAME, per ``ADDR[:PORT]``, an entry ``{"weight": W, "state": S}`` with S ``active``
(added or re-weighted), ``draining`` (weight 0) or ``removed`` (taken out, even a model
server). A full apply merges the registry into its model
(:func:`dcnet.elbstore.effective.effective_model`), so what the hooks did is kept; the
model file of the last apply is what ``elbctl backend`` plans against.

The model is stored with :mod:`pickle` (the model has no other serialised form), in the
pieces of :mod:`dcnet.model.pieces` so a drift check can read it a piece at a time; it is
loaded only from a file owned by this user in a directory nobody else may write (the
directory is made 0700, files 0600), otherwise refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import stat
from collections.abc import Mapping
from typing import Any

from dcnet.elbstore.effective import effective_model
from dcnet.lvs.dynamic import ACTIONS, BackendCommandError, _resolve, check_request, update_registry
from dcnet.lvs.layout import layouts
from dcnet.model import Model
from dcnet.model import pieces as model_pieces
from dcnet.sysio.files import atomic_write

__all__ = ["ACTIONS", "BackendCommandError", "BackendFile", "UnsafeFile", "record"]

VERSION = 1
MODEL_VERSION = 2         # the model file: 1 the model pickled whole, 2 its pieces


class UnsafeFile(RuntimeError):
    """The stored model is writable by someone else: it is not loaded."""


class BackendFile:
    """The registry and last applied model of one target, in ``directory``."""

    def __init__(self, directory: str, target: str):
        self.directory, self.target = directory, target

    def path(self, suffix: str) -> str:
        return os.path.join(self.directory, f"{self.target}.{suffix}")

    @property
    def registry_path(self) -> str:
        return self.path("backends.json")

    @property
    def model_path(self) -> str:
        return self.path("model.pickle")

    def _make_directory(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)

    # -- registry: {service: {ident: {"weight": int, "state": str}}}

    def registry(self) -> dict[str, dict[str, dict]]:
        try:
            with open(self.registry_path, encoding="utf-8") as handle:
                return json.load(handle).get("services", {})
        except FileNotFoundError:
            return {}

    def save_registry(self, services: Mapping[str, Mapping[str, dict]]) -> None:
        self._make_directory()
        data = {"version": VERSION, "services": {k: dict(v) for k, v in services.items() if v}}
        atomic_write(self.registry_path, json.dumps(data, indent=1, sort_keys=True),
                     mode=0o600, fsync=True)

    def effective(self, model: Model) -> Model:
        """``model`` with the registry merged in."""
        return effective_model(model, self.registry())

    # -- the model of the last successful apply

    def last_model(self) -> Model | None:
        pieces = self.last_pieces()
        return None if pieces is None else pieces.whole()

    def last_pieces(self) -> model_pieces.Pieces | None:
        """The last applied model in pieces (:mod:`dcnet.model.pieces`): a drift check
        reads it a piece at a time; a file of the whole model (version 1) is packed."""
        try:
            fd = os.open(self.model_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as handle:
            self._check_safe(os.fstat(handle.fileno()), self.model_path)
            self._check_safe(os.stat(self.directory), self.directory)
            data = pickle.load(handle)      # our own file, checked just above
        if not isinstance(data, dict):
            return None
        if data.get("version") == MODEL_VERSION and isinstance(data.get("pieces"), tuple):
            return model_pieces.Pieces(data["pieces"])
        if data.get("version") == VERSION and isinstance(data.get("model"), Model):
            return model_pieces.Pieces(model_pieces.pack(data["model"]))
        return None

    @staticmethod
    def _check_safe(info: os.stat_result, path: str) -> None:
        if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UnsafeFile(f"{path} is not owned by this user or is writable by others: "
                             "refusing to load it (run 'elbctl apply' again)")

    def save_model(self, model: Model) -> None:
        """Record ``model`` (the model as given, before the registry was merged)."""
        data = pickle.dumps({"version": MODEL_VERSION, "pieces": model_pieces.pack(model)})
        with contextlib.suppress(OSError), open(self.model_path, "rb") as handle:
            if handle.read() == data:
                return
        self._make_directory()
        atomic_write(self.model_path, data, mode=0o600, fsync=True)


def record(files: BackendFile, model: Model, action: str, service: str, server_text: str,
           weight: int | None, *, only_known: bool = False
           ) -> tuple[str, str, dict[str, Any] | None]:
    """Record one change durably: (service JOBNAME, ADDR[:PORT], its entry or None).

    Raises :class:`BackendCommandError` (nothing recorded) for an unknown service, a bad
    address, port or weight; the rules are the model's, as for LVS. ``only_known``:
    record nothing (entry None) for a server neither the model nor the registry has."""
    if action not in ACTIONS:
        raise BackendCommandError(f"unknown action {action!r}")
    layout = _resolve({s.name: s for s in layouts(model)}, service)
    ident = check_request(layout, server_text, weight)
    registry = files.registry()
    entries = dict(registry.get(layout.name, {}))
    known = ident in entries or any(s.ident == ident for s in layout.servers)
    if only_known and not known:
        return layout.name, ident, None
    update_registry(entries, layout, ident, action, weight)
    registry[layout.name] = entries
    files.save_registry(registry)
    return layout.name, ident, entries.get(ident)
