"""Benchmark definitions: YAML data checked by a schema, loaded into frozen dataclasses.

A definition says which modes to build, which tests to run on each, how many measured
rounds (``repeats``) follow how many dropped warm-up rounds, and the durations. Nothing
in it is executed: every field is read by a typed reader, and every problem is reported
with its file, line and field path (``quick.yaml:12: tests[1].streams: must be between 1
and 128, got 0``), all problems at once. The file is read like a service model
(:mod:`dcnet.model.inputs`): at most :data:`MAX_DEFINITION_BYTES` (a FIFO or
``/dev/zero`` is refused at the limit), UTF-8 only, the line of the first bad byte named.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dcnet.model import inputs
from dcnet.model.errors import ModelError, Problem
from dcnet.model.fields import (
    MISSING,
    MappingReader,
    Problems,
    boolean,
    integer,
    list_of,
    number,
    one_of,
    text,
)
from dcnet.model.yamlsource import LocatedData, YAMLSourceError, load_located
from dcnet.netbench.catalogue import MODE_NAMES

FORMAT_VERSION = 1
KINDS = frozenset({"tcp", "udp", "latency", "rr", "connrate"})
FAMILIES = ("ipv4", "ipv6")
_NAME = r"[a-z0-9][a-z0-9_-]{0,39}"
_BITRATE = r"[0-9]+(\.[0-9]+)?[KMG]?"
DEFINITIONS_DIR = Path(__file__).parent / "definitions"
MAX_DEFINITION_BYTES = 1024 * 1024     # the shipped ones are about 2 KiB


class DefinitionError(ModelError):
    """A definition failed the schema; ``problems`` names file, line and field of each."""


@dataclass(frozen=True)
class TestSpec:
    """One test run on every mode; fields that do not apply to its kind keep defaults."""

    name: str
    kind: str
    duration: float = 2.0
    omit: int = 1
    streams: int = 1
    length: int | None = None
    bitrate: str = "0"
    protocol: str = "tcp"
    message_size: int = 64
    keep_raw: bool = False
    max_connections: int = 1_000_000
    timeout: float = 1.0

    __test__ = False  # not a pytest class

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Definition:
    """A whole benchmark: modes x tests, rounds, statistics settings."""

    name: str
    modes: tuple[str, ...]
    tests: tuple[TestSpec, ...]
    baseline: str
    repeats: int = 5
    warmup_rounds: int = 1
    seed: int = 1
    min_effect: float = 0.05
    description: str = ""
    source: str = ""
    settle: float = 0.0
    families: tuple[str, ...] = ("ipv4",)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["modes"] = list(self.modes)
        data["families"] = list(self.families)
        data["tests"] = [test.to_dict() for test in self.tests]
        data["netbench"] = FORMAT_VERSION
        return data

    def test(self, name: str) -> TestSpec:
        for spec in self.tests:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def rounds(self) -> int:
        return self.warmup_rounds + self.repeats


def builtin(name: str) -> str:
    """Path of a definition shipped with dcnet (``modes``, ``quick``)."""
    return str(DEFINITIONS_DIR / f"{name}.yaml")


def resolve(path_or_name: str) -> str:
    """A path as given, or a shipped definition's path when only its name is given."""
    if os.path.exists(path_or_name) or "/" in path_or_name or path_or_name.endswith(".yaml"):
        return path_or_name
    return builtin(path_or_name)


def load(path: str | os.PathLike[str]) -> Definition:
    """Read and check a definition file; DefinitionError lists every problem."""
    source = str(path)
    try:
        content = inputs.read_text(source, MAX_DEFINITION_BYTES)
    except inputs.InputError as exc:
        what = "cannot read" if exc.unreadable else "cannot use"
        raise DefinitionError([Problem(source, exc.line, "", f"{what}: {exc}")]) from None
    return loads(content, source)


def loads(content: str, source: str = "<definition>") -> Definition:
    """Check a definition given as YAML text (``source`` names it in errors)."""
    try:
        located = load_located(content, source)
    except YAMLSourceError as exc:
        raise DefinitionError([Problem(source, exc.line, "", str(exc).split(": ", 1)[-1])]) \
            from None
    if located.data is None:
        raise DefinitionError([Problem(source, 1, "", "the definition is empty (expected a "
                                       "mapping with netbench, name, modes and tests)")])
    return _Reader(located).definition()


class _Reader:
    def __init__(self, located: LocatedData):
        self.located = located
        self.problems = Problems(located)

    def definition(self) -> Definition:
        top = MappingReader(self.problems, (), self.located.data, "a definition")
        version = top.required("netbench", integer(1, 1000))
        if version is not MISSING and version != FORMAT_VERSION:
            self.problems.add(("netbench",), f"unsupported definition format {version} "
                                             f"(this netbench reads {FORMAT_VERSION})")
        name = top.required("name", text(_NAME, "lower-case letters, digits, '-' and '_'"))
        description = top.optional("description", text(r"(?s).*", "text"), "")
        repeats = top.optional("repeats", integer(1, 100), 5)
        warmup = top.optional("warmup_rounds", integer(0, 10), 1)
        seed = top.optional("seed", integer(0, 2**31), 1)
        min_effect = top.optional("min_effect", number(0.0, 1.0), 0.05)
        settle = top.optional("settle", number(0.0, 10.0), 0.0)
        modes = self.modes(top.required("modes", lambda value: value))
        families = self.families(top.optional("families", lambda value: value, ["ipv4"]))
        baseline = top.required("baseline", one_of(MODE_NAMES, "mode"))
        tests = self.tests(top.required("tests", lambda value: value))
        top.finish()
        if baseline is not MISSING and modes and baseline not in modes:
            self.problems.add(("baseline",), f"baseline {baseline!r} is not one of the "
                                             f"definition's modes ({', '.join(modes)})")
        if self.problems.items:
            raise DefinitionError(self.problems.items)
        return Definition(name=name, modes=tuple(modes), tests=tuple(tests), baseline=baseline,
                          repeats=repeats, warmup_rounds=warmup, seed=seed,
                          min_effect=min_effect, description=description.strip(),
                          source=self.located.source, settle=settle,
                          families=tuple(families))

    def modes(self, value: object) -> list[str]:
        items = list_of(("modes",), self.problems, value, "modes")
        if value is not MISSING and isinstance(value, list) and not items:
            self.problems.add(("modes",), "at least one mode is required")
        names: list[str] = []
        check = one_of(MODE_NAMES, "mode")
        for index, item in enumerate(items):
            try:
                name = check(item)
            except ValueError as exc:
                self.problems.add(("modes", index), str(exc))
                continue
            if name in names:
                self.problems.add(("modes", index), f"duplicate mode {name!r}")
            names.append(name)
        return names

    def families(self, value: object) -> list[str]:
        """``families``: a non-empty list of ``ipv4``/``ipv6`` without duplicates."""
        items = list_of(("families",), self.problems, value, "families")
        if isinstance(value, list) and not items:
            self.problems.add(("families",), "at least one address family is required "
                                             "(ipv4, ipv6)")
        names: list[str] = []
        check = one_of(frozenset(FAMILIES), "address family")
        for index, item in enumerate(items):
            try:
                name = check(item)
            except ValueError as exc:
                self.problems.add(("families", index), str(exc))
                continue
            if name in names:
                self.problems.add(("families", index), f"duplicate address family {name!r}")
            names.append(name)
        return [family for family in FAMILIES if family in names]

    def tests(self, value: object) -> list[TestSpec]:
        items = list_of(("tests",), self.problems, value, "tests")
        if value is not MISSING and isinstance(value, list) and not items:
            self.problems.add(("tests",), "at least one test is required")
        specs: list[TestSpec] = []
        seen: set[str] = set()
        for index, item in enumerate(items):
            spec = self.test(("tests", index), item)
            if spec is None:
                continue
            if spec.name in seen:
                self.problems.add(("tests", index, "name"), f"duplicate test {spec.name!r}")
            seen.add(spec.name)
            specs.append(spec)
        return specs

    def test(self, path: tuple, item: object) -> TestSpec | None:
        reader = MappingReader(self.problems, path, item, "a test")
        name = reader.required("name", text(_NAME, "lower-case letters, digits, '-' and '_'"))
        kind = reader.required("kind", one_of(KINDS, "test kind"))
        values: dict[str, Any] = {
            "duration": reader.optional("duration", number(0.5, 600.0), 2.0)}
        if kind in ("tcp", "udp"):
            values["omit"] = reader.optional("omit", integer(0, 10), 1)
            values["streams"] = reader.optional("streams", integer(1, 128), 1)
            values["length"] = reader.optional(
                "length", integer(64, 65507), 1200 if kind == "udp" else None)
        if kind == "udp":
            values["bitrate"] = reader.optional(
                "bitrate", _bitrate, "0")
        if kind in ("latency", "rr"):
            values["protocol"] = reader.optional("protocol", one_of(frozenset({"tcp", "udp"}),
                                                                    "protocol"), "tcp")
            values["message_size"] = reader.optional("message_size", integer(14, 65000), 64)
        if kind == "latency":
            values["keep_raw"] = reader.optional("keep_raw", boolean, False)
        if kind == "connrate":
            values["max_connections"] = reader.optional("max_connections",
                                                        integer(1, 10_000_000), 1_000_000)
            values["timeout"] = reader.optional("timeout", number(0.05, 10.0), 1.0)
        if not reader.finish() or kind is MISSING or name is MISSING:
            return None
        if any(value is MISSING for value in values.values()):
            return None
        values = {key: value for key, value in values.items() if value is not None}
        return TestSpec(name=name, kind=kind, **values)


def _bitrate(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not re.fullmatch(_BITRATE, value):
        raise ValueError(f"{value!r} is not a bitrate such as 0 (unlimited), 500M or 2G")
    return value
