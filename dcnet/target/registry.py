"""Registry of ELB targets (``lvs``, ``haproxy``, ``dns``, ...) by name.

Built-in targets are listed by import path (``module:Class``) so that a caller pays
only for the targets it uses; tests and plug-ins add their own with :func:`register`.
A new target is one module with a :class:`dcnet.target.Target` subclass plus one line
here, and its options (:class:`dcnet.target.Option`) in a light module of their own
plus one line in :data:`BUILTIN_OPTIONS`: a command line offers every target's flags
from those (:func:`target_options`) without importing any target.
"""

from __future__ import annotations

import importlib
import os

from dcnet.target.base import Option, Target, TargetError

BUILTIN: dict[str, str] = {"dns": "dcnet.dns.backend:DNSTarget",
                           "haproxy": "dcnet.haproxy.backend:HAProxyTarget",
                           "lvs": "dcnet.lvs.backend:LVSTarget",
                           "nft": "dcnet.nft.target:NftTarget"}
# each built-in target's options, importable without the target (a command line offers
# every target's flags; importing every target costs 8 MiB and jinja2, numpy, pyroute2)
BUILTIN_OPTIONS: dict[str, str] = {"dns": "dcnet.dns.settings:OPTIONS",
                                   "haproxy": "dcnet.haproxy.options:OPTIONS",
                                   "lvs": "dcnet.lvs.options:OPTIONS",
                                   "nft": "dcnet.nft.options:OPTIONS"}
_registered: dict[str, type[Target]] = {}


class UnknownTarget(TargetError, LookupError):
    exit_code = 3

    def __init__(self, name: str):
        known = ", ".join(available()) or "none yet"
        super().__init__(f"no target {name!r} (available: {known})")


def register(cls: type[Target]) -> None:
    _registered[cls.name] = cls


def unregister(name: str) -> None:
    _registered.pop(name, None)


def available() -> list[str]:
    return sorted(set(BUILTIN) | set(_registered))


def target_class(name: str) -> type[Target]:
    if name in _registered:
        return _registered[name]
    if name in BUILTIN:
        module, _, attr = BUILTIN[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    raise UnknownTarget(name)


def target_options(name: str) -> tuple[Option, ...]:
    """``name``'s options (what :func:`target_class` would give as ``.options``), without
    importing a built-in target's module."""
    if name in _registered:
        return tuple(_registered[name].options)
    if name in BUILTIN_OPTIONS:
        module, _, attr = BUILTIN_OPTIONS[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    raise UnknownTarget(name)


def resolve_options(cls: type[Target], given: dict) -> dict:
    """Every option of ``cls``: the given value, else its environment variable, else its
    default; an option the target does not declare is refused."""
    known = {opt.name: opt for opt in cls.options}
    unknown = sorted(k for k in given if k not in known)
    if unknown:
        raise TargetError(f"target {cls.name} has no option(s) {', '.join(unknown)}")
    out = {}
    for name, opt in known.items():
        value = given.get(name)
        if value is None and opt.envvar and os.environ.get(opt.envvar):
            raw = os.environ[opt.envvar]
            if opt.is_flag or opt.type is bool:
                value = raw.strip().lower() in ("1", "true", "yes", "on")
            else:
                try:
                    value = opt.type(raw)
                except ValueError:
                    raise TargetError(f"${opt.envvar}={raw!r} is not a valid "
                                      f"{opt.type.__name__} for --{opt.flag}") from None
        out[name] = opt.default if value is None else value
    return out


def create(name: str, **options) -> Target:
    """A target instance with its options resolved (see :func:`resolve_options`)."""
    cls = target_class(name)
    return cls(**resolve_options(cls, options))
