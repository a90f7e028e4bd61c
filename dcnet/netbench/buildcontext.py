"""What every benchmark mode builder shares: the build context and the lab LiveMode.

``BuildContext`` carries the teardown stack, the work and log directories and the labs
built so far; ``lab_mode`` wraps a lab whose client and server are lab hosts into a
:class:`~dcnet.netbench.live.LiveMode` of one address family (IPv6 servers listen on
their own ports, :data:`DEFAULT_PORTS_V6`); ``family_address`` picks an interface's
address of a family from the lab's topology. Both the plain modes (``dcnet.netbench.modes``)
and the CNI modes (``dcnet.netbench.cnimodes``) build on this module, which imports
neither.
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from dcnet.lab.builder import Lab
from dcnet.netbench.live import LiveMode, lab_starter

DEFAULT_PORTS = {"iperf3": 5201, "sockperf-tcp": 11111, "sockperf-udp": 11112,
                 "connrate": 7100, "qperf": 19765, "qperf-data": 19766}
DEFAULT_PORTS_V6 = {key: port + 100 for key, port in DEFAULT_PORTS.items()}


@dataclass
class BuildContext:
    """What builders share: the teardown stack, a work directory, the log directory."""

    stack: contextlib.ExitStack
    work_dir: str
    log_dir: str
    labs: list[Lab] = field(default_factory=list)

    def lab(self, topology: dict[str, Any]) -> Lab:
        lab = self.stack.enter_context(Lab(topology))
        self.labs.append(lab)
        return lab

    def namespaces(self) -> list[str]:
        """Every namespace of every lab built so far (for the teardown check)."""
        return [name for lab in self.labs for name in lab.netns_names]


def family_address(lab: Lab, host: str, ifname: str, family: str) -> str:
    """The first ``family`` address (no prefix length) of host/ifname in lab's topology."""
    version = 6 if family == "ipv6" else 4
    for text in lab.topology.addresses_of(host, ifname):
        address = ipaddress.ip_interface(text)
        if address.version == version:
            return str(address.ip)
    raise KeyError(f"interface {ifname!r} on host {host!r} has no {family} address")


def lab_mode(name: str, context: BuildContext, lab: Lab, client: str, server: str,
             address: str, interfaces: list[tuple[str, str]], target: str | None = None,
             family: str = "ipv4", **notes: Any) -> LiveMode:
    """A LiveMode of ``family`` for a lab whose client and server are lab hosts."""
    ports = DEFAULT_PORTS_V6 if family == "ipv6" else DEFAULT_PORTS
    return LiveMode(
        name=name, client_ns=lab.netns(client), server_ns=lab.netns(server),
        bind_address=address, target=target or address, ports=dict(ports),
        interfaces=[(lab.netns(host), ifname) for host, ifname in interfaces],
        starter=lab_starter(lab, server), log_dir=context.log_dir, notes=notes, labs=[lab],
        family=family)
