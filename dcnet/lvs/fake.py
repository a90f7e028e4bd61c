"""A stateful fake of the kernel's IPVS table, for unit tests of pure logic.

It keeps services and their dests in dicts and answers like the kernel does (errno
values, the HASHED flag in dumps, dests vanishing with their service, every request of a
batch executed even after one fails); the contract tests in
tests/unit/test_lvs_contract.py run against it and against the real kernel alike.
``fail_on`` makes requests for chosen command numbers fail with an errno, and
``conns`` sets a dest's active connection counter, to exercise stop-and-report and drain.
Its bulk read (``all_dest_rows``) prints the table as the kernel prints /proc/net/ip_vs
and parses that text back (:mod:`dcnet.lvs.procfs`), so it loses what the kernel's file
loses (thresholds); ``proc_text`` is that text (what the fingerprint hashes).
"""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Sequence

from dcnet.lvs import procfs
from dcnet.lvs.ipvs import (
    CMD_DEL_DEST,
    CMD_DEL_SERVICE,
    CMD_NEW_DEST,
    CMD_NEW_SERVICE,
    CMD_SET_DEST,
    CMD_SET_SERVICE,
    FLAG_HASHED,
    Request,
    WireDest,
    WireService,
)
from dcnet.model.types import SCHEDULERS

SvcId = tuple[int, int, str, int, int]
DestId = tuple[str, int]


def _svc_id(s: WireService) -> SvcId:
    return (s.family, s.protocol, s.addr, s.port, s.fwmark)


class FakeIPVS:
    """In-memory IPVS: ``services``/``dests``/``execute`` like :class:`KernelIPVS`."""

    def __init__(self, schedulers: frozenset[str] = SCHEDULERS):
        self.schedulers = schedulers
        self.table: dict[SvcId, WireService] = {}
        self.dest_table: dict[SvcId, dict[DestId, WireDest]] = {}
        self.writes = 0
        self.fail_on: dict[int, int] = {}     # command -> errno to answer
        self.fail_after: int | None = None    # fail every request after this many writes

    def close(self) -> None:
        pass

    # -- reads

    def services(self) -> list[WireService]:
        return [dataclasses.replace(s, flags=s.flags | FLAG_HASHED) for s in self.table.values()]

    def service(self, service: WireService) -> WireService | None:
        # through services(), so a subclass that wraps another table answers from it
        wanted = _svc_id(service)
        return next((s for s in self.services() if _svc_id(s) == wanted), None)

    def dests(self, service: WireService) -> list[WireDest]:
        # like the kernel: a dump for a service that does not exist is empty, not an error
        return list(self.dest_table.get(_svc_id(service), {}).values())

    def dest_rows(self, service: WireService) -> list[tuple]:
        return [dataclasses.astuple(d) for d in self.dests(service)]

    def proc_text(self) -> str:
        return procfs.format_table(
            (s, list(self.dest_table[sid].values())) for sid, s in self.table.items())

    def all_dest_rows(self) -> dict[procfs.ServiceId, list[tuple]]:
        return procfs.parse(self.proc_text())

    def set_conns(self, service: WireService, addr: str, port: int, active: int,
                  inactive: int | None = None) -> None:
        dests = self.dest_table[_svc_id(service)]
        old = dests[(addr, port)]
        dests[(addr, port)] = dataclasses.replace(
            old, active=active, inactive=old.inactive if inactive is None else inactive)

    # -- writes

    def execute(self, requests: Sequence[Request]) -> list[int]:
        results = []
        for request in requests:
            self.writes += 1
            if self.fail_after is not None and self.writes > self.fail_after:
                results.append(errno.EIO)
            elif request.cmd in self.fail_on:
                results.append(self.fail_on[request.cmd])
            else:
                results.append(self._one(request))
        return results

    def _one(self, r: Request) -> int:
        sid = _svc_id(r.service)
        if r.cmd in (CMD_NEW_SERVICE, CMD_SET_SERVICE):
            if r.cmd == CMD_NEW_SERVICE and sid in self.table:
                return errno.EEXIST
            if r.cmd == CMD_SET_SERVICE and sid not in self.table:
                return errno.ESRCH
            if r.service.sched not in self.schedulers:
                return errno.ENOENT
            self.table[sid] = dataclasses.replace(r.service, flags=r.service.flags & ~FLAG_HASHED)
            self.dest_table.setdefault(sid, {})
            return 0
        if r.cmd == CMD_DEL_SERVICE:
            if sid not in self.table:
                return errno.ESRCH
            del self.table[sid]
            del self.dest_table[sid]
            return 0
        if sid not in self.table:
            return errno.ESRCH
        dests = self.dest_table[sid]
        assert r.dest is not None
        did = (r.dest.addr, r.dest.port)
        if r.cmd == CMD_DEL_DEST:
            return 0 if dests.pop(did, None) is not None else errno.ENOENT
        if r.dest.weight > 0x7FFFFFFF or r.dest.l_thresh > r.dest.u_thresh:
            return errno.ERANGE
        if r.cmd == CMD_NEW_DEST and did in dests:
            return errno.EEXIST
        if r.cmd == CMD_SET_DEST and did not in dests:
            return errno.ENOENT
        old = dests.get(did)
        dests[did] = dataclasses.replace(
            r.dest, active=old.active if old else 0, inactive=old.inactive if old else 0,
            persistent=old.persistent if old else 0)
        return 0
