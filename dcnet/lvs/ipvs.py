"""The narrow IPVS interface elbctl programs through, and its kernel implementation.

An :class:`IPVSTable` is shaped like the kernel API and nothing more:

- ``services()``: one dump of every virtual service; ``service(key)`` one service by
  its key (one GET request; None when absent), for the incremental sync;
- ``dests(service)``: one dump of a service's real servers (with connection counters);
  ``dest_rows(service)`` the same as plain tuples in WireDest's field order;
- ``all_dest_rows()``: every dest of every service in ONE read (the kernel's
  ``/proc/net/ip_vs``, :mod:`dcnet.lvs.procfs`), keyed by :func:`procfs.service_id`;
  rows as ``dest_rows`` gives them except thresholds and persistent-connection counters,
  which that file does not show (``None``); ``None`` instead of a dict when the bulk
  read is not available (then callers read per service);
- ``proc_text()``: that file's text itself (None when not available), for the
  fingerprint of :mod:`dcnet.lvs.fingerprint`;
- ``execute(requests)``: run write requests in order, every one of them, returning the
  errno of each (0 = done); ``writes`` counts write requests issued so far.

:class:`KernelIPVS` is the real thing (:mod:`dcnet.lvs.genl`), optionally inside a named
network namespace; :class:`dcnet.lvs.fake.FakeIPVS` is the stateful fake for unit tests.
Both pass the same contract tests (tests/unit/test_lvs_contract.py, run against the real
kernel in the kernel lab).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Protocol

from dcnet.lvs import procfs
from dcnet.lvs.genl import (
    CMD_DEL_DEST,
    CMD_DEL_SERVICE,
    CMD_NEW_DEST,
    CMD_NEW_SERVICE,
    CMD_SET_DEST,
    CMD_SET_SERVICE,
    IPVSSocket,
    NetlinkError,
    Request,
    WireDest,
    WireService,
)

__all__ = [
    "CMD_DEL_DEST",
    "CMD_DEL_SERVICE",
    "CMD_NEW_DEST",
    "CMD_NEW_SERVICE",
    "CMD_SET_DEST",
    "CMD_SET_SERVICE",
    "FLAG_HASHED",
    "FLAG_PERSISTENT",
    "FORWARD_CODES",
    "FORWARD_NAMES",
    "PROTOCOLS",
    "PROTOCOL_NAMES",
    "IPVSTable",
    "KernelIPVS",
    "NetlinkError",
    "Request",
    "WireDest",
    "WireService",
]

PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "sctp": 132}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}
FORWARD_CODES = {"nat": 0, "tun": 2, "dr": 3}
FORWARD_NAMES = {0: "nat", 1: "local", 2: "tun", 3: "dr", 4: "bypass"}
FLAG_PERSISTENT, FLAG_HASHED = 0x1, 0x2


class IPVSTable(Protocol):
    writes: int

    def services(self) -> list[WireService]: ...

    def service(self, service: WireService) -> WireService | None: ...

    def dests(self, service: WireService) -> list[WireDest]: ...

    def dest_rows(self, service: WireService) -> list[tuple]: ...

    def all_dest_rows(self) -> dict[procfs.ServiceId, list[tuple]] | None: ...

    def proc_text(self) -> str | None: ...

    def execute(self, requests: Sequence[Request]) -> list[int]: ...

    def close(self) -> None: ...


class KernelIPVS(IPVSSocket):
    """The kernel's IPVS table, in the caller's namespace or in ``netns`` (a name)."""

    def __init__(self, netns: str | None = None):
        sock = None
        self.netns_path: str | None = None
        if netns:
            from dcnet.sysio import netns as netns_mod

            self.netns_path = netns_mod.path_of(netns)
            sock = netns_mod.socket_in(self.netns_path, socket.AF_NETLINK, socket.SOCK_RAW, 16)
        super().__init__(sock)

    def proc_text(self) -> str | None:
        """The namespace's /proc/net/ip_vs text (None if the kernel has no such file,
        e.g. built without procfs)."""
        try:
            return procfs.read_in(self.netns_path)
        except FileNotFoundError:
            return None

    def all_dest_rows(self) -> dict[procfs.ServiceId, list[tuple]] | None:
        """Every dest of the namespace from one read of /proc/net/ip_vs (None if the
        kernel has no such file)."""
        text = self.proc_text()
        return None if text is None else procfs.parse(text)
