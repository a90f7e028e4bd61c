"""Running ``nft`` (optionally inside a named network namespace) and reading dcnet's table.

Only dcnet's own table is ever listed, never the whole ruleset: one
``nft -j -t list table inet dcnet`` (terse: no set elements, so neither the Maglev maps'
65,537 slots nor the affinity sets' live entries are read), ``nft -j list map inet dcnet
services`` and ``... services6`` for the service elements, and ``nft -j list tables ip``
(table names only) to find the IPv4-only ``table ip dcnet`` of earlier versions, read
as the ``legacy`` object that every plan then deletes. The read state is
``(kind, key) -> attrs`` in :mod:`dcnet.nft.ruleset`'s vocabulary; its digest is a hash
of the listings, which carry rule handles, so any write to the table changes it.

:meth:`Nft.genid` reads the namespace's nftables generation id (one netlink request):
the nft target's fast path (:mod:`dcnet.nft.fingerprint`) skips the listing when it has
not moved since dcnet's last transaction.

Writes go through :meth:`Nft.run_script`: one ``nft -f -`` per call, i.e. one atomic
transaction. The namespace is entered by ``ip netns exec`` (the argv comes from
:mod:`dcnet.sysio.netns`, the one module that switches namespaces).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dcnet.nft import flat, listing
from dcnet.nft.ruleset import (
    COUNTER_MAPS,
    FAMILY,
    LEGACY,
    SERVICES_MAP,
    SERVICES_MAP6,
    TABLE,
    parse_name,
)
from dcnet.sysio import netns as netns_mod
from dcnet.target import TargetError, TargetUnavailable

NETLINK_NETFILTER = 12
FLAT_MAPS = tuple(m(f) for f in (4, 6) for m in (flat.member_map, flat.slot_map,
                                                 flat.mark_map, flat.pattern_map,
                                                 flat.index_map))

ABSENT = "absent"
COUNTS = re.compile(r'"packets": \d+, "bytes": \d+')    # a named counter's values
COMMENT_PREFIX = listing.COMMENT


class NftError(TargetError):
    """nft refused a command or a transaction (nothing of that transaction applied)."""


class NftUnavailable(TargetUnavailable):
    """nft or the namespace cannot be used."""


@dataclass(frozen=True)
class Listing:
    state: dict
    notes: tuple[str, ...]
    digest: str


class Nft:
    """The ``nft`` binary, in the host's namespace or in ``netns``."""

    def __init__(self, netns: str | None = None, binary: str = "nft"):
        self.netns = netns or None
        self.binary = binary
        self.transactions = 0      # nft -f runs that changed something
        self.commands = 0          # commands in them

    def argv(self, *args: str) -> list[str]:
        if shutil.which(self.binary) is None:
            raise NftUnavailable(f"no {self.binary!r} binary on PATH")
        if self.netns and not netns_mod.exists(self.netns):
            raise NftUnavailable(f"network namespace {self.netns!r} does not exist")
        return netns_mod.exec_argv(self.netns, [self.binary, *args])

    def _run(self, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), input=stdin, capture_output=True,
                              text=True, check=False)

    def run_script(self, text: str | Iterable[str],
                   meanwhile: Callable[[], object] | None = None) -> None:
        """Run ``text`` as one ``nft -f -`` transaction; NftError if nft refused it.

        ``text`` may come in pieces (an iterable of whole lines): each is written to
        nft's input as it comes, so nft parses while the rest is rendered. If the pieces
        raise, nft is killed before it reads the end of its input: it commits nothing.
        ``meanwhile`` is called once the input is written, while nft evaluates and
        commits it (work for the other core)."""
        pieces = (text,) if isinstance(text, str) else text
        lines = 0
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(self.argv("-f", "-"), stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=err)
            try:
                with contextlib.suppress(BrokenPipeError):   # nft stopped reading: see err
                    for piece in pieces:
                        lines += piece.count("\n")
                        proc.stdin.write(piece.encode())
            except BaseException:
                proc.kill()                  # before its input ends: it commits nothing
                proc.wait()
                with contextlib.suppress(OSError):
                    proc.stdin.close()
                raise
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
            late = None
            if meanwhile is not None:
                try:
                    meanwhile()
                except BaseException as exc:  # nft may be committing: wait for it first
                    late = exc
            code = proc.wait()
            if late is not None:
                raise late
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        if code != 0:
            raise NftError("nft transaction refused, nothing of it applied: "
                           + _first_error(stderr))
        self.transactions += 1
        self.commands += lines

    def list_json(self, *what: str, terse: bool = False) -> str | None:
        """``nft -j [-t] list <what>``; None when the object does not exist."""
        done = self._run(["-j", *(["-t"] if terse else []), "list", *what])
        if done.returncode != 0:
            if "No such file or directory" in done.stderr:
                return None
            raise NftError(f"nft list {' '.join(what)}: " + _first_error(done.stderr))
        return done.stdout

    def raw_listing(self) -> tuple[str | None, tuple[str, ...], bool]:
        """(terse table listing, both services maps' listings, legacy table present)."""
        legacy = self.legacy_present()
        table = self.list_json("table", FAMILY, TABLE, terse=True)
        if table is None:
            return None, (), legacy
        maps = [self.list_json("map", FAMILY, TABLE, m)
                for m in (SERVICES_MAP, SERVICES_MAP6, *COUNTER_MAPS.values(), *FLAT_MAPS)]
        return table, tuple(m for m in maps if m is not None), legacy

    def legacy_present(self) -> bool:
        """Does the IPv4-only ``table ip dcnet`` of earlier versions exist?"""
        listing = self.list_json("tables", LEGACY[0]) or "{}"
        return any(item.get("table", {}).get("name") == LEGACY[1]
                   for item in json.loads(listing).get("nftables", []))

    def digest(self) -> str:
        from dcnet.nft import drio

        return listing_digest(*self.raw_listing()) + drio.digest_suffix(*drio.listing(self))

    def genid(self) -> int:
        """The namespace's nftables generation: every committed transaction (of any
        table) bumps it. One netlink request (NFT_MSG_GETGEN), no listing."""
        if self.netns and not netns_mod.exists(self.netns):
            raise NftUnavailable(f"network namespace {self.netns!r} does not exist")
        return _genid(self.netns)

    def identity(self) -> str:
        """Which network namespace this is (device and inode of its nsfs file)."""
        if self.netns:
            dev, ino = netns_mod.identity(self.netns)
        else:
            st = os.stat(netns_mod.CALLER_NETNS_PATH)
            dev, ino = st.st_dev, st.st_ino
        return f"{dev}:{ino}"

    def read(self) -> Listing:
        table, services, legacy = self.raw_listing()
        state, notes = parse_listing(table, services)
        if legacy:
            state[("legacy", LEGACY)] = {}
        from dcnet.nft import dr, drio  # forward: dr, table netdev dcnet

        dr_table, dr_maps = drio.listing(self)
        dr_state, dr_notes = dr.parse_listing(dr_table, dr_maps)
        state.update(dr_state)
        return Listing(state, (*notes, *dr_notes), listing_digest(table, services, legacy)
                       + drio.digest_suffix(dr_table, dr_maps))


def _genid(netns: str | None = None) -> int:
    """NFT_MSG_GETGEN on a stdlib netlink socket (created inside ``netns``: no thread,
    no pyroute2 socket; a few hundred microseconds)."""
    import socket
    import struct

    try:
        if netns:
            sock = netns_mod.socket_in(netns_mod.path_of(netns), socket.AF_NETLINK,
                                       socket.SOCK_RAW, NETLINK_NETFILTER)
        else:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    except (OSError, netns_mod.NetnsError) as exc:
        raise NftUnavailable(f"cannot read the nftables generation: {exc}") from None
    try:
        sock.settimeout(10)
        sock.send(struct.pack("=IHHIIBBH", 20, (10 << 8) | 16, 1, 1, 0, 0, 0, 0))  # GETGEN
        data = sock.recv(1 << 16)
        length, mtype = struct.unpack_from("=IH", data, 0)
        if mtype == 2:                                    # NLMSG_ERROR
            code = -struct.unpack_from("=i", data, 16)[0]
            raise OSError(code, os.strerror(code))
        off = 20
        while off + 4 <= min(length, len(data)):
            alen, atype = struct.unpack_from("=HH", data, off)
            if atype & 0x3FFF == 1 and alen >= 8:         # NFTA_GEN_ID
                return struct.unpack_from(">I", data, off + 4)[0]
            off += max(4, (alen + 3) & ~3)
        raise OSError("no NFTA_GEN_ID in the answer")
    except OSError as exc:  # netlink refused: report it as the target being unusable
        raise NftUnavailable(f"cannot read the nftables generation: {exc}") from None
    finally:
        sock.close()


def listing_digest(table: str | None, services, legacy: bool = False) -> str:
    """A hash of the listings (``services``: the maps' listings, or one as a string)."""
    if table is None:
        return ABSENT + ("+legacy" if legacy else "")
    h = hashlib.sha256(COUNTS.sub("", table).encode())    # traffic is not a change
    for text in _listings(services):
        h.update(b"\0" + text.encode())
    h.update(b"\0legacy" if legacy else b"")
    return h.hexdigest()[:16]


def _first_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln]
    return (errors or lines or ["(no message)"])[0][:300]


def _listings(services) -> tuple[str, ...]:
    if services is None:
        return ()
    return (services,) if isinstance(services, str) else tuple(services)


def parse_listing(table: str | None, services) -> tuple[dict, tuple[str, ...]]:
    """(state, notes) from the table's JSON listing and the services maps' (one string or
    a sequence of them; pure)."""
    state: dict = {}
    notes: list[str] = []
    classes: dict = {}
    if table is None:
        return state, ()
    def other(item: dict) -> None:
        if "counter" in item:
            ident = parse_name(item["counter"]["name"])
            if ident is None or ident[0] != "counter":
                notes.append(f"foreign counter {item['counter']['name']!r} in table "
                             f"{FAMILY} {TABLE} left alone")
            else:
                state[ident] = {}
        elif "set" in item or "map" in item:
            obj = item.get("set") or item.get("map")
            ident = parse_name(obj["name"])
            if ident is not None and ident[0] == "classes":
                classes.setdefault(ident, []).append(obj["name"])
            elif ident is None or ident[0] not in ("table", "affinity", "maglev"):
                notes.append(f"foreign set/map {obj['name']!r} in table {FAMILY} {TABLE} "
                             "left alone")
            elif ident[0] == "table":
                t = obj.get("type")
                state[ident] = {"type": " . ".join(t) if isinstance(t, list) else t}
            elif ident[0] == "affinity":
                state[ident] = {"timeout": obj.get("timeout", 0)}
            else:
                state[ident] = {"size": _maglev_size(obj)}

    chains, rules = listing.split(json.loads(table).get("nftables", []), other)
    state.update(listing.chain_states(chains, rules, parse_name,
                                      ("hook", "service", "backend", "lb", "lbgroup"),
                                      "hook",
                                      f"{FAMILY} {TABLE}", notes))
    state.update({ident: {"sets": tuple(sorted(names))} for ident, names in classes.items()})
    found: dict[str, dict] = {"flat": {}, "wr": {}, "marks": {}, "pat": {}, "wrp": {}}
    for text in _listings(services):
        for item in json.loads(text).get("nftables", []):
            name = (item.get("map") or {}).get("name")
            if name in FLAT_MAPS:
                _flat_elements(name, item["map"].get("elem", []), found)
                continue
            tallies = {v: k[0] for k, v in COUNTER_MAPS.items()}.get(name)
            for key, verdict in (item.get("map") or {}).get("elem", []):
                vip, proto, port = key["concat"]
                if tallies:         # a counter map: VIP . proto . port : counter name
                    state[("tally", (str(proto), str(ipaddress.ip_address(vip)), int(port),
                                     tallies))] = {"counter": verdict}
                    continue
                target = (verdict.get("goto") or verdict.get("jump") or {}).get("target")
                state[("element", (str(proto), str(ipaddress.ip_address(vip)),
                                   int(port)))] = {"chain": target}
    state.update(flat.parse(found["flat"], found["wr"], found["marks"], found["pat"],
                            found["wrp"]))
    return state, tuple(notes)


def _flat_elements(name: str, elems: list, found: dict[str, dict]) -> None:
    """The elements of one flat-layout map (:mod:`dcnet.nft.flat`) into ``found`` by the
    map's name without its family digit: ``flat`` (key3 -> W), ``wr`` and ``wrp`` (key3
    -> {slot or index key: "RIP . RPORT"}), ``marks`` and ``pat`` (key3 -> value)."""
    target = found[name.rstrip("46")]
    is_slots = name.startswith("wr")
    for key, value in elems:
        parts = key["concat"]
        key3 = (str(parts[1]), str(ipaddress.ip_address(parts[0])), int(parts[2]))
        if is_slots:
            rip, rport = value["concat"]
            target.setdefault(key3, {})[int(parts[3])] = (
                f"{ipaddress.ip_address(rip)} . {int(rport)}")
        else:
            target[key3] = int(value)


def parse_counters(text: str) -> dict:
    """Pure: ``{(proto, vip, port): {"conns" | "in" | "out": (packets, bytes)}}`` from
    ``nft -j list counters``; counters of other names are skipped. (The exporter reads
    them by netlink, :mod:`dcnet.nft.objects`: nft loads every chain first.)"""
    out: dict = {}
    for item in json.loads(text).get("nftables", []):
        counter = item.get("counter")
        ident = parse_name(counter["name"]) if counter else None
        if ident is None or ident[0] != "counter":
            continue
        proto, vip, port, which = ident[1]
        out.setdefault((proto, vip, port), {})[which] = (int(counter.get("packets", 0)),
                                                         int(counter.get("bytes", 0)))
    return out


def _maglev_size(obj: dict) -> int:
    """A Maglev map's size: its comment says it (``dcnet:size=M``), else 0."""
    comment = obj.get("comment", "")
    if comment.startswith(COMMENT_PREFIX + "size="):
        return int(comment.split("=", 1)[1])
    return 0
