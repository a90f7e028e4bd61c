"""Cross-object validation rules of the service model.

Each rule looks at the carriers and services that read cleanly (with their index in the
file, so errors point at the right line) and reports problems; none does I/O.
"""

from __future__ import annotations

from dcnet.model.fields import Problems, format_path
from dcnet.model.types import Carrier, Forwarding, Service

IndexedCarriers = list[tuple[int, Carrier]]
IndexedServices = list[tuple[int, Service]]

_SAME_PORT_METHODS = (Forwarding.DR, Forwarding.TUN)


def check_model(carriers: IndexedCarriers, services: IndexedServices, problems: Problems,
                declared_carriers: frozenset[str] = frozenset()) -> None:
    """Run every cross-object rule; ``declared_carriers`` holds the names of carriers
    that failed to read, so services naming them are not reported a second time."""
    check_carriers(carriers, problems)
    known = {c.name: c for _, c in carriers}
    for index, service in services:
        check_service(index, service, known, problems, declared_carriers)
    check_unique_jobnames(services, problems)
    check_unique_listeners(services, problems)


def check_carriers(carriers: IndexedCarriers, problems: Problems) -> None:
    if not carriers:
        problems.add(("carriers",), "at least one carrier is required")
        return
    _report_duplicates(problems, [(("carriers", i, "name"), c.name) for i, c in carriers],
                       "carrier name")
    _report_duplicates(problems, [(("carriers", i, "table"), c.table) for i, c in carriers],
                       "routing table")
    defaults = [i for i, c in carriers if c.default]
    if not defaults:
        problems.add(("carriers",), "no carrier is marked 'default: true' (the default line "
                     "answers clients of no known carrier)")
    for i in defaults:
        if dict(carriers)[i].down:
            problems.add(("carriers", i, "down"), "the default carrier cannot be marked down: "
                         "it is the fallback for every other line")
    for i in defaults[1:]:
        problems.add(("carriers", i, "default"),
                     f"more than one default carrier (carriers[{defaults[0]}] is already default)")
    for pos, (_, a) in enumerate(carriers):
        for j, b in carriers[pos + 1:]:
            for net_a in a.vip_ranges:
                for net_b in b.vip_ranges:
                    if net_a.version == net_b.version and net_a.overlaps(net_b):
                        problems.add(("carriers", j, "vip_ranges"),
                                     f"VIP range {net_b} of carrier {b.name!r} overlaps {net_a} "
                                     f"of carrier {a.name!r}")


def check_service(index: int, service: Service, carriers: dict[str, Carrier],
                  problems: Problems, declared_carriers: frozenset[str] = frozenset()) -> None:
    path = ("services", index)
    for carrier_name, vip in service.vips:
        carrier = carriers.get(carrier_name)
        if carrier is None and carrier_name in declared_carriers:
            continue  # that carrier's own errors are reported already
        if carrier is None:
            problems.add((*path, "vips", carrier_name), f"unknown carrier {carrier_name!r} "
                         f"(known: {', '.join(sorted(carriers))})")
        elif not carrier.owns_vip(vip):
            ranges = ", ".join(str(n) for n in carrier.vip_ranges)
            problems.add((*path, "vips", carrier_name),
                         f"VIP {vip} is outside carrier {carrier_name!r}'s VIP ranges ({ranges})")
        elif carrier.gateway_of(vip.version) is None:
            problems.add((*path, "vips", carrier_name),
                         f"VIP {vip} is IPv{vip.version} but carrier {carrier_name!r} has no "
                         f"IPv{vip.version} gateway (set gateway6 for a dual-stack line)")
    default = next((c.name for c in carriers.values() if c.default), None)
    if default and service.vip(default) is None:
        problems.add((*path, "vips"), f"no VIP on the default carrier {default!r}")
    _report_duplicates(problems, [((*path, "ports", i, "port"), (p.protocol.value, p.port))
                                  for i, p in enumerate(service.ports)], "port")
    for i, port in enumerate(service.ports):
        if port.forward in _SAME_PORT_METHODS and port.backend_port != port.port:
            problems.add((*path, "ports", i, "target_port"),
                         f"{port.forward.value.upper()} forwarding cannot change the port "
                         f"({port.port} -> {port.backend_port}); use NAT or drop target_port")
    check_real_servers(path, service, problems)


def check_real_servers(path, service: Service, problems: Problems) -> None:
    """The service's real servers against its own ports and VIPs (nothing else)."""
    vip_families = {vip.version for _, vip in service.vips}
    seen = []
    for i, server in enumerate(service.real_servers):
        spath = (*path, "real_servers", i)
        if server.port is not None and len(service.ports) > 1:
            problems.add((*spath, "port"), "a real-server port is only allowed when the service "
                         "has exactly one port; map ports with ports[].target_port")
            continue
        for port in service.ports:
            rs_port = service.server_port(server, port)
            if port.forward in _SAME_PORT_METHODS and rs_port != port.port:
                problems.add((*spath, "port"),
                             f"{port.forward.value.upper()} forwarding needs the real server on "
                             f"the virtual port {port.port}, not {rs_port}")
        if needs_same_family(service) and server.address.version not in vip_families:
            problems.add((*spath, "address"), f"real server {server.address} is IPv"
                         f"{server.address.version} but the service's VIPs are not (only TUN "
                         "forwarding can mix address families)")
        seen.append(((*spath, "address"), (server.address, server.port)))
    _report_duplicates(problems, seen, "real server")


def needs_same_family(service: Service) -> bool:
    """IPVS mixes IPv4 and IPv6 only for TUN (IP-in-IP/GUE) real servers."""
    return any(p.forward is not Forwarding.TUN for p in service.ports)


def check_unique_jobnames(services: IndexedServices, problems: Problems) -> None:
    _report_duplicates(problems, [(("services", i, "job"), s.name) for i, s in services],
                       "JOBNAME")


def check_unique_listeners(services: IndexedServices, problems: Problems) -> None:
    """No two (VIP, protocol, port) listeners anywhere in the model."""
    owners: dict[tuple, tuple[int, str]] = {}
    for index, service in services:
        for _carrier, vip in service.vips:
            for i, port in enumerate(service.ports):
                key = (vip, port.protocol, port.port)
                listener = f"{vip}:{port.port}/{port.protocol.value}"
                if key in owners and owners[key][0] != index:
                    problems.add(("services", index, "ports", i, "port"),
                                 f"duplicate VIP:port {listener} (also used by "
                                 f"services[{owners[key][0]}] {owners[key][1]})")
                owners.setdefault(key, (index, service.name))


def _report_duplicates(problems: Problems, items: list[tuple[tuple, object]], what: str) -> None:
    first: dict[object, tuple] = {}
    for path, value in items:
        if value in first:
            shown = value if not isinstance(value, tuple) else "/".join(map(str, value))
            problems.add(path, f"duplicate {what} {shown} (first at {format_path(first[value])})")
        else:
            first[value] = path

