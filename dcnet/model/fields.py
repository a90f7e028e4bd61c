"""Field readers for the model loader: typed conversion with errors tied to field paths.

A :class:`Problems` collects every error with its file, line and field path; a
:class:`MappingReader` reads one YAML mapping, converting each field and reporting
missing, mistyped and unknown keys. Converters are plain functions that raise
``ValueError`` with a message for the user.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from dcnet.model.errors import ModelError, Problem
from dcnet.model.yamlsource import LocatedData, Path

MISSING: Any = object()
Converter = Callable[[object], Any]


def format_path(path: Path) -> str:
    """``('services', 2, 'ports', 0)`` -> ``services[2].ports[0]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class Problems:
    """Every problem found in one model, located through the parsed document; past
    ``MAX_PROBLEMS`` they are only counted (a hostile model can hold millions)."""

    MAX_PROBLEMS = 1000

    def __init__(self, located: LocatedData):
        self.located = located
        self.items: list[Problem] = []
        self.dropped = 0
        self.stopped_at = ""

    def add(self, path: Path, message: str, *, source: str | None = None,
            line: int | None = None) -> None:
        if len(self.items) >= self.MAX_PROBLEMS:
            self.dropped += 1
            return
        if source is None:
            source, line = self.located.source, self.located.line_of(path)
        self.items.append(Problem(source, line, format_path(path), message))

    @property
    def full(self) -> bool:
        """True once ``MAX_PROBLEMS`` are listed: readers may stop early."""
        return len(self.items) >= self.MAX_PROBLEMS

    def stop(self, path: Path) -> None:
        """Note that reading stopped before ``path`` because the list is full."""
        self.stopped_at = format_path(path)

    def raise_if_any(self) -> None:
        if self.dropped or self.stopped_at:
            message = (f"reading stopped at {self.stopped_at} after {len(self.items)} "
                       "problems; more problems not listed" if self.stopped_at else
                       f"{self.dropped} more problems not listed")
            raise ModelError(self.items, last=Problem(self.located.source, None, "", message))
        if self.items:
            raise ModelError(self.items)


class MappingReader:
    """Reads the fields of one mapping; every failure becomes a located problem."""

    def __init__(self, problems: Problems, path: Path, data: object, what: str):
        self.problems, self.path = problems, path
        self.ok = isinstance(data, dict)
        self.data: dict = data if self.ok else {}
        self.seen: set[str] = set()
        self.failed = False
        if not self.ok:
            problems.add(path, f"{what} must be a mapping, got {type_name(data)}")
            self.failed = True

    def required(self, key: str, convert: Converter) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if self.ok:
                self.problems.add(self.path, f"missing required field '{key}'")
            self.failed = True
            return MISSING
        return self._convert(key, convert)

    def optional(self, key: str, convert: Converter, default: Any = None) -> Any:
        self.seen.add(key)
        if key not in self.data or self.data[key] is None:
            return default
        return self._convert(key, convert)

    def finish(self) -> bool:
        """Report unknown keys; True when every field was valid."""
        for key in self.data:
            if key not in self.seen:
                expected = ", ".join(sorted(self.seen))
                self.problems.add((*self.path, key), f"unknown field (expected one of: {expected})")
                self.failed = True
        return not self.failed

    def _convert(self, key: str, convert: Converter) -> Any:
        try:
            return convert(self.data[key])
        except ValueError as exc:
            self.problems.add((*self.path, key), str(exc))
            self.failed = True
            return MISSING


def type_name(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "nothing"}.get(
                type(value), type(value).__name__)


def integer(low: int, high: int) -> Converter:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, got {type_name(value)} {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value
    return convert


def number(low: float, high: float) -> Converter:
    def convert(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number, got {type_name(value)} {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return float(value)
    return convert


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {type_name(value)} {value!r}")
    return value


def text(pattern: str, explain: str) -> Converter:
    regex = re.compile(pattern)

    def convert(value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, got {type_name(value)} {value!r}")
        if not regex.fullmatch(value):
            raise ValueError(f"{value!r} is not valid: {explain}")
        return value
    return convert


def ip_address(value: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value if isinstance(value, str) else "")
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None


def ip_network(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value if isinstance(value, str) else "", strict=True)
    except ValueError as exc:
        detail = "host bits set" if "host bits" in str(exc) else "not a CIDR prefix"
        raise ValueError(f"{value!r} is not a valid network ({detail})") from None


def choice(enum: type[StrEnum]) -> Converter:
    def convert(value: object) -> StrEnum:
        try:
            return enum(str(value).lower() if isinstance(value, str) else value)
        except ValueError:
            allowed = ", ".join(e.value for e in enum)
            raise ValueError(f"{value!r} is not one of: {allowed}") from None
    return convert


def one_of(allowed: frozenset[str], what: str) -> Converter:
    def convert(value: object) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"unknown {what} {value!r} (known: {', '.join(sorted(allowed))})")
        return value
    return convert


def list_of(path: Path, problems: Problems, value: object, what: str) -> list:
    """The items of a list field, or [] after reporting that it is not a list."""
    if value is MISSING or value is None:
        return []
    if not isinstance(value, list):
        problems.add(path, f"{what} must be a list, got {type_name(value)}")
        return []
    return value


def raw(value: object) -> object:
    return value
