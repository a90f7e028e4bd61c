"""Registry of apply targets (``lvs``, ``haproxy``, ``dns``, ...) for ``elbctl plan/apply``.

Each back end registers a factory under its target name; the CLI looks targets up here
and never imports a back end it does not use. Built-in targets are listed by import path
so that registering costs no import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from dcnet.plan import Backend

Factory = Callable[..., Backend]

# Built-in targets: name -> "module:attribute" of a Backend factory.
BUILTIN: dict[str, str] = {"dns": "dcnet.dns.backend:backend",
                           "haproxy": "dcnet.haproxy.backend:create",
                           "lvs": "dcnet.lvs.backend:create"}
_registered: dict[str, Factory] = {}


class UnknownTarget(LookupError):
    def __init__(self, name: str):
        known = ", ".join(available()) or "none yet"
        super().__init__(f"no back end for target {name!r} (available: {known})")


def register(name: str, factory: Factory) -> None:
    _registered[name] = factory


def unregister(name: str) -> None:
    _registered.pop(name, None)


def available() -> list[str]:
    return sorted(set(BUILTIN) | set(_registered))


def create(name: str, **options) -> Backend:
    if name in _registered:
        return _registered[name](**options)
    if name in BUILTIN:
        module, _, attr = BUILTIN[name].partition(":")
        return getattr(importlib.import_module(module), attr)(**options)
    raise UnknownTarget(name)
