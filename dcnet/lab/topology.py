"""Lab topologies as data: frozen dataclasses, parsing from dict/YAML, validation.

It owns the description of a network-namespace lab (hosts with sysctls,
bridges inside hosts, veth links between endpoints, routes, processes with an
optional TCP readiness port) and its validation, which reports every problem
with its field path, e.g. ``links[2].b.host: unknown host 'n9'``. It performs no
kernel or process I/O; ``from_yaml`` reads the file only when given a path.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dcnet.lab.topology_refs import CrossChecker

IFNAME_MAX = 15
HOST_NAME_MAX = 32
_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_IFNAME_FORBIDDEN = re.compile(r"[/:\s]")
_SYSCTL_KEY = re.compile(r"^net(\.[A-Za-z0-9_-]+)+$")
ROUTE_TABLE_NAMES = {"default": 253, "main": 254, "local": 255}
RESERVED_IFNAMES = {"lo"}


class TopologyError(ValueError):
    """The topology is invalid; ``errors`` lists every ``path: problem`` line."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("invalid topology:\n  " + "\n  ".join(self.errors))


@dataclass(frozen=True)
class Host:
    """A network namespace; sysctls are (key, value) pairs applied inside it."""

    name: str
    sysctls: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Bridge:
    """A Linux bridge living inside ``host`` (a switch is a host holding a bridge)."""

    name: str
    host: str
    addresses: tuple[str, ...] = ()
    mtu: int | None = None


@dataclass(frozen=True)
class Endpoint:
    """One end of a veth: an interface in ``host``, addressed or enslaved to ``bridge``."""

    host: str
    ifname: str
    addresses: tuple[str, ...] = ()
    mtu: int | None = None
    bridge: str | None = None


@dataclass(frozen=True)
class Veth:
    """A veth pair joining endpoint ``a`` and endpoint ``b``."""

    a: Endpoint
    b: Endpoint


@dataclass(frozen=True)
class Route:
    """A route in ``host``: dst is a CIDR or 'default'; table None means main."""

    host: str
    dst: str
    via: str | None = None
    dev: str | None = None
    table: int | None = None
    metric: int | None = None


@dataclass(frozen=True)
class Process:
    """A long-running program started inside ``host`` once the network is built."""

    name: str
    host: str
    argv: tuple[str, ...]
    ready_tcp_port: int | None = None
    ready_timeout: float = 10.0


@dataclass(frozen=True)
class Topology:
    """A whole lab: hosts, bridges, links, routes and processes."""

    hosts: tuple[Host, ...]
    bridges: tuple[Bridge, ...] = ()
    links: tuple[Veth, ...] = ()
    routes: tuple[Route, ...] = ()
    processes: tuple[Process, ...] = field(default=())

    @classmethod
    def from_dict(cls, data: Any) -> Topology:
        """Parse and validate; raises TopologyError listing every problem."""
        parser = _Parser()
        topology = parser.topology(data)
        if topology is not None:
            CrossChecker(topology, parser.errors).check()
        if parser.errors:
            raise TopologyError(parser.errors)
        assert topology is not None
        return topology

    @classmethod
    def from_yaml(cls, text_or_path: str | os.PathLike[str]) -> Topology:
        """Parse YAML given as text, or as a path to a .yaml/.yml file."""
        text = _yaml_text(text_or_path)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TopologyError([f"<yaml>: {exc}"]) from exc
        return cls.from_dict(data)

    def validated(self) -> Topology:
        """Re-validate a directly constructed topology; returns the parsed equivalent."""
        return Topology.from_dict(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The plain-data form accepted by ``from_dict``."""
        return {
            "hosts": [{"name": h.name, "sysctls": dict(h.sysctls)} for h in self.hosts],
            "bridges": [_drop_none(vars(b)) for b in self.bridges],
            "links": [{"a": _endpoint_dict(v.a), "b": _endpoint_dict(v.b)} for v in self.links],
            "routes": [_drop_none(vars(r)) for r in self.routes],
            "processes": [_drop_none(vars(p)) for p in self.processes],
        }

    def host_names(self) -> list[str]:
        return [host.name for host in self.hosts]

    def addresses_of(self, host: str, ifname: str) -> tuple[str, ...]:
        """The CIDR addresses configured on ``ifname`` (a veth end or bridge) of ``host``."""
        for bridge in self.bridges:
            if (bridge.host, bridge.name) == (host, ifname):
                return bridge.addresses
        for end in self.endpoints():
            if (end.host, end.ifname) == (host, ifname):
                return end.addresses
        raise KeyError(f"no interface {ifname!r} on host {host!r}")

    def endpoints(self) -> list[Endpoint]:
        return [end for link in self.links for end in (link.a, link.b)]


def _yaml_text(text_or_path: str | os.PathLike[str]) -> str:
    if isinstance(text_or_path, os.PathLike):
        return Path(text_or_path).read_text()
    looks_like_path = "\n" not in text_or_path and text_or_path.endswith((".yaml", ".yml"))
    if looks_like_path and os.path.isfile(text_or_path):
        return Path(text_or_path).read_text()
    return text_or_path


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: (list(v) if isinstance(v, tuple) else v) for key, v in values.items()
            if v is not None}


def _endpoint_dict(end: Endpoint) -> dict[str, Any]:
    return _drop_none(vars(end))


# ---------------------------------------------------------------- parsing


class _Parser:
    """Turns plain data into dataclasses, recording ``path: problem`` errors."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    # -- generic field helpers

    def mapping(self, value: Any, path: str, allowed: set[str], required: set[str]) -> bool:
        if not isinstance(value, Mapping):
            self.error(path, f"expected a mapping, got {type(value).__name__}")
            return False
        for key in value:
            if key not in allowed:
                self.error(f"{path}.{key}", f"unknown field (expected one of {sorted(allowed)})")
        for key in sorted(required - set(value)):
            self.error(f"{path}.{key}", "required field missing")
        return True

    def items(self, data: Mapping[str, Any], key: str) -> list[tuple[str, Any]]:
        value = data.get(key, [])
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(key, f"expected a list, got {type(value).__name__}")
            return []
        return [(f"{key}[{index}]", item) for index, item in enumerate(value)]

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value:
            self.error(path, f"expected a non-empty string, got {value!r}")
            return ""
        return value

    def optional_string(self, value: Any, path: str) -> str | None:
        return None if value is None else self.string(value, path)

    def integer(self, value: Any, path: str, low: int, high: int) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f"expected an integer, got {value!r}")
            return None
        if not low <= value <= high:
            self.error(path, f"{value} out of range {low}..{high}")
        return value

    def host_name(self, value: Any, path: str) -> str:
        name = self.string(value, path)
        if name and (len(name) > HOST_NAME_MAX or not _HOST_NAME.match(name)):
            self.error(path, f"invalid host name {name!r} (letters, digits, '_' and '-', "
                             f"at most {HOST_NAME_MAX} chars)")
        return name

    def ifname(self, value: Any, path: str) -> str:
        name = self.string(value, path)
        if len(name) > IFNAME_MAX:
            self.error(path, f"interface name {name!r} longer than {IFNAME_MAX} chars")
        elif name in (".", "..") or _IFNAME_FORBIDDEN.search(name):
            self.error(path, f"invalid interface name {name!r}")
        elif name in RESERVED_IFNAMES:
            self.error(path, f"interface name {name!r} is reserved")
        return name

    def mtu(self, value: Any, path: str) -> int | None:
        return self.integer(value, path, 68, 65535)

    def addresses(self, value: Any, path: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.error(path, f"expected a list of CIDR addresses, got {value!r}")
            return ()
        return tuple(self.interface_address(item, f"{path}[{i}]") for i, item in enumerate(value))

    def interface_address(self, value: Any, path: str) -> str:
        text = self.string(value, path)
        if text and "/" not in text:
            self.error(path, f"address {text!r} needs a prefix length, e.g. '{text}/24'")
            return text
        try:
            return str(ipaddress.ip_interface(text)) if text else text
        except ValueError:
            self.error(path, f"invalid CIDR address {text!r}")
            return text

    # -- sections

    def topology(self, data: Any) -> Topology | None:
        sections = {"hosts", "bridges", "links", "routes", "processes"}
        if not self.mapping(data, "<topology>", sections, {"hosts"}):
            return None
        return Topology(
            hosts=tuple(self.host(item, path) for path, item in self.items(data, "hosts")),
            bridges=tuple(self.bridge(item, path) for path, item in self.items(data, "bridges")),
            links=tuple(self.link(item, path) for path, item in self.items(data, "links")),
            routes=tuple(self.route(item, path) for path, item in self.items(data, "routes")),
            processes=tuple(
                self.process(item, path) for path, item in self.items(data, "processes")
            ),
        )

    def host(self, item: Any, path: str) -> Host:
        if isinstance(item, str):
            return Host(self.host_name(item, path))
        if not self.mapping(item, path, {"name", "sysctls"}, {"name"}):
            return Host("")
        return Host(
            name=self.host_name(item.get("name"), f"{path}.name"),
            sysctls=self.sysctls(item.get("sysctls"), f"{path}.sysctls"),
        )

    def sysctls(self, value: Any, path: str) -> tuple[tuple[str, str], ...]:
        if value is None:
            return ()
        if not isinstance(value, Mapping):
            self.error(path, f"expected a mapping of sysctl key to value, got {value!r}")
            return ()
        pairs = []
        for key, setting in value.items():
            if not isinstance(key, str) or not _SYSCTL_KEY.match(key):
                self.error(f"{path}.{key}", "sysctl key must be a per-namespace 'net.*' key")
            elif isinstance(setting, (dict, list)) or setting is None:
                self.error(f"{path}.{key}", f"sysctl value must be a scalar, got {setting!r}")
            else:
                pairs.append((key, _sysctl_text(setting)))
        return tuple(pairs)

    def bridge(self, item: Any, path: str) -> Bridge:
        if not self.mapping(item, path, {"name", "host", "addresses", "mtu"}, {"name", "host"}):
            return Bridge("", "")
        return Bridge(
            name=self.ifname(item.get("name"), f"{path}.name"),
            host=self.string(item.get("host"), f"{path}.host"),
            addresses=self.addresses(item.get("addresses"), f"{path}.addresses"),
            mtu=self.mtu(item.get("mtu"), f"{path}.mtu"),
        )

    def link(self, item: Any, path: str) -> Veth:
        if not self.mapping(item, path, {"a", "b"}, {"a", "b"}):
            return Veth(Endpoint("", ""), Endpoint("", ""))
        return Veth(self.endpoint(item.get("a"), f"{path}.a"),
                    self.endpoint(item.get("b"), f"{path}.b"))

    def endpoint(self, item: Any, path: str) -> Endpoint:
        allowed = {"host", "ifname", "addresses", "mtu", "bridge"}
        if item is None or not self.mapping(item, path, allowed, {"host", "ifname"}):
            return Endpoint("", "")
        return Endpoint(
            host=self.string(item.get("host"), f"{path}.host"),
            ifname=self.ifname(item.get("ifname"), f"{path}.ifname"),
            addresses=self.addresses(item.get("addresses"), f"{path}.addresses"),
            mtu=self.mtu(item.get("mtu"), f"{path}.mtu"),
            bridge=self.optional_string(item.get("bridge"), f"{path}.bridge"),
        )

    def route(self, item: Any, path: str) -> Route:
        allowed = {"host", "dst", "via", "dev", "table", "metric"}
        if not self.mapping(item, path, allowed, {"host", "dst"}):
            return Route("", "")
        route = Route(
            host=self.string(item.get("host"), f"{path}.host"),
            dst=self.route_dst(item.get("dst"), f"{path}.dst"),
            via=self.gateway(item.get("via"), f"{path}.via"),
            dev=self.optional_string(item.get("dev"), f"{path}.dev"),
            table=self.route_table(item.get("table"), f"{path}.table"),
            metric=self.integer(item.get("metric"), f"{path}.metric", 0, 2**32 - 1),
        )
        self.route_shape(route, path)
        return route

    def route_dst(self, value: Any, path: str) -> str:
        text = self.string(value, path)
        if not text or text == "default":
            return text
        try:
            return str(ipaddress.ip_network(text, strict=True))
        except ValueError as exc:
            self.error(path, f"invalid destination network {text!r} ({exc})")
            return text

    def gateway(self, value: Any, path: str) -> str | None:
        text = self.optional_string(value, path)
        if not text:
            return text
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            self.error(path, f"invalid gateway address {text!r}")
            return text

    def route_table(self, value: Any, path: str) -> int | None:
        if isinstance(value, str):
            if value not in ROUTE_TABLE_NAMES:
                self.error(path, f"unknown table name {value!r} (use a number or "
                                 f"{sorted(ROUTE_TABLE_NAMES)})")
                return None
            return ROUTE_TABLE_NAMES[value]
        return self.integer(value, path, 1, 2**32 - 1)

    def route_shape(self, route: Route, path: str) -> None:
        if route.via is None and route.dev is None:
            self.error(path, "a route needs 'via' or 'dev'")
        if route.via and route.dst and route.dst != "default":
            try:
                dst_version = ipaddress.ip_network(route.dst).version
                via_version = ipaddress.ip_address(route.via).version
            except ValueError:
                return
            if dst_version != via_version:
                self.error(f"{path}.via", f"gateway {route.via} is IPv{via_version} but "
                                          f"dst {route.dst} is IPv{dst_version}")

    def process(self, item: Any, path: str) -> Process:
        allowed = {"name", "host", "argv", "ready_tcp_port", "ready_timeout"}
        if not self.mapping(item, path, allowed, {"name", "host", "argv"}):
            return Process("", "", ())
        return Process(
            name=self.string(item.get("name"), f"{path}.name"),
            host=self.string(item.get("host"), f"{path}.host"),
            argv=self.argv(item.get("argv"), f"{path}.argv"),
            ready_tcp_port=self.integer(item.get("ready_tcp_port"), f"{path}.ready_tcp_port",
                                        1, 65535),
            ready_timeout=self.timeout(item.get("ready_timeout", 10.0), f"{path}.ready_timeout"),
        )

    def argv(self, value: Any, path: str) -> tuple[str, ...]:
        if isinstance(value, list) and value and all(isinstance(a, str) for a in value):
            return tuple(value)
        self.error(path, "expected a non-empty list of strings")
        return ()

    def timeout(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            self.error(path, f"expected a positive number of seconds, got {value!r}")
            return 10.0
        return float(value)


def _sysctl_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
