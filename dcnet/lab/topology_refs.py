"""Cross-reference checks of a parsed lab topology (part of its validation).

It owns ``CrossChecker``: given the dataclasses ``dcnet.lab.topology`` parsed, it checks
what one section says about another (hosts unique and known, bridges and interfaces
unique per host, bridge ports without addresses, route devices that exist, process
names unique) and appends ``path: problem`` lines to the parser's error list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dcnet.lab.topology import Endpoint, Topology


class CrossChecker:
    """Checks references between sections: hosts, bridges, interfaces, names."""

    def __init__(self, topology: Topology, errors: list[str]):
        self.topology = topology
        self.errors = errors
        self.hosts: set[str] = set()
        self.bridges: set[tuple[str, str]] = set()
        self.interfaces: dict[tuple[str, str], str] = {}

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def check(self) -> None:
        self.check_hosts()
        self.check_bridges()
        self.check_links()
        self.check_routes()
        self.check_processes()

    def check_hosts(self) -> None:
        if not self.topology.hosts:
            self.error("hosts", "at least one host is required")
        for index, host in enumerate(self.topology.hosts):
            if host.name in self.hosts:
                self.error(f"hosts[{index}].name", f"duplicate host {host.name!r}")
            self.hosts.add(host.name)

    def known_host(self, name: str, path: str) -> bool:
        if name and name not in self.hosts:
            self.error(path, f"unknown host {name!r}")
            return False
        return bool(name)

    def claim_interface(self, host: str, ifname: str, path: str) -> None:
        key = (host, ifname)
        if ifname and key in self.interfaces:
            self.error(path, f"duplicate interface {ifname!r} on host {host!r} "
                             f"(already defined at {self.interfaces[key]})")
        else:
            self.interfaces[key] = path

    def check_bridges(self) -> None:
        for index, bridge in enumerate(self.topology.bridges):
            path = f"bridges[{index}]"
            if self.known_host(bridge.host, f"{path}.host"):
                self.claim_interface(bridge.host, bridge.name, f"{path}.name")
                self.bridges.add((bridge.host, bridge.name))

    def check_links(self) -> None:
        for index, link in enumerate(self.topology.links):
            self.check_endpoint(link.a, f"links[{index}].a")
            self.check_endpoint(link.b, f"links[{index}].b")

    def check_endpoint(self, end: Endpoint, path: str) -> None:
        if not self.known_host(end.host, f"{path}.host"):
            return
        self.claim_interface(end.host, end.ifname, f"{path}.ifname")
        if end.bridge is None:
            return
        if (end.host, end.bridge) not in self.bridges:
            self.error(f"{path}.bridge", f"unknown bridge {end.bridge!r} on host {end.host!r}")
        if end.addresses:
            self.error(f"{path}.addresses", f"a port of bridge {end.bridge!r} takes no "
                                            "addresses; put them on the bridge")

    def check_routes(self) -> None:
        for index, route in enumerate(self.topology.routes):
            path = f"routes[{index}]"
            if not self.known_host(route.host, f"{path}.host"):
                continue
            if route.dev not in (None, "lo") and (route.host, route.dev) not in self.interfaces:
                self.error(f"{path}.dev", f"unknown interface {route.dev!r} on host "
                                          f"{route.host!r}")

    def check_processes(self) -> None:
        seen: set[str] = set()
        for index, process in enumerate(self.topology.processes):
            path = f"processes[{index}]"
            if process.name in seen:
                self.error(f"{path}.name", f"duplicate process {process.name!r}")
            seen.add(process.name)
            self.known_host(process.host, f"{path}.host")
