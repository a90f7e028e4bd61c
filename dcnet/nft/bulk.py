"""A big sync as one raw netlink batch: no ``nft -f`` parsing hundreds of thousands of
elements.

A full sync of 30,000 VIP:ports by ``nft -f`` spends ~3 s in nft's parser and evaluator
(1.2 GB of its memory) before the kernel sees a message. This module sends the same
transaction itself, as :mod:`dcnet.nft.fastpath` does for small ones:

1. **Everything but the flat elements** (:data:`COMPILED_KINDS`: the table's maps,
   sets, fixed chains and their rules; chained VIP:ports' chains, affinity sets,
   services-map elements and Maglev maps), when the plan creates them in an empty
   table: their ``nft -f`` script (:func:`dcnet.nft.script.script`, with the counters
   their rules name) runs in a fresh private namespace
   (:func:`dcnet.sysio.netns.run_in_new`), and the sets, chains, rules and set elements
   are read back with one dump each (one per set for elements, made again when it
   repeated an element: :func:`_set_elements`): the kernel's own encoding, replayed
   as ``NEWTABLE``, ``NEWSET``, ``NEWCHAIN``, ``NEWRULE`` and ``NEWSETELEM``. A rule
   holding an anonymous set is not replayed (:class:`NotBulk`: ``nft -f`` goes
   instead).
2. **Every VIP:port's flat elements and counters** (``flat``, ``tally``, ``counter``):
   encoded here as :func:`dcnet.nft.fastpath.element_messages` does, a run of creates
   of one kind grouped set by set, up to :data:`PER_MESSAGE` elements to a message
   (the order within such a run is free: the same argument as the script's batching).

All of it goes in one ``BATCH_BEGIN`` ... ``END`` (sets, then named counters, then the
chains and rules that name both, then elements): the kernel commits it entirely or not
at all, and bumps the generation id once, exactly as ``nft -f`` does. Only the last
message asks for an ack (an ack for each of 300,000 messages would overflow the socket's
receive buffer); errors are answered whatever the flags.

:func:`eligible` says which plans go so: more than :data:`dcnet.nft.fastpath.MAX_ELEMENTS`
elements, every other change a creation of a compiled kind (and then the plan was read
from an empty table). Everything else goes as before.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Mapping

from dcnet.nft import fastpath as fp
from dcnet.nft import flat
from dcnet.nft.ruleset import TABLE, counter_map, counter_name
from dcnet.nft.script import script
from dcnet.plan import Action, Change
from dcnet.sysio import netns as netns_mod

# created by nft in a private namespace and replayed (everything but the flat elements,
# counters and counter-map elements, which are encoded here; not DR's netdev table)
COMPILED_KINDS = frozenset({"table", "classes", "lb", "lbgroup", "hook", "service",
                            "backend", "element", "affinity", "maglev"})
PER_MESSAGE = 1024            # elements in one NEWSETELEM message of a run
CHAIN_INPUT = frozenset({3, 4, 5, 7})   # NFTA_CHAIN_NAME, HOOK, POLICY, TYPE
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10          # errors without the refused message's copy
SO_RCVBUFFORCE = 33
DUMP_TRIES = 20               # dumps of one set's elements before giving up


class NotBulk(RuntimeError):
    """The table's own objects cannot be replayed (``nft -f`` must carry this plan)."""


def eligible(changes: list[Change], objects_read: int) -> bool:
    """Is this plan a bulk one (module docstring)? ``objects_read``: how many objects
    the plan was read with (0: an empty or absent table)."""
    elements = 0
    compiled = False
    for c in changes:
        if c.kind in fp.ELEMENT_KINDS:
            elements += sum(len(a.get("slots", ())) + 6 for a in (c.old, c.new) if a)
        elif c.kind in COMPILED_KINDS and c.action is Action.CREATE:
            compiled = True
        else:
            return False
    return elements > fp.MAX_ELEMENTS and (not compiled or objects_read == 0)


def apply(netns: str | None, changes: list[Change], bodies: Mapping,
          meanwhile: Callable[[], object] | None = None) -> int:
    """Carry out ``changes`` (:func:`eligible`) as one batch in ``netns``; returns the
    number of messages sent. NotBulk when the table's objects cannot be replayed (nothing
    sent); FastPathError when the kernel refused the batch (nothing applied).
    ``meanwhile`` runs on this thread while the kernel takes the batch."""
    compiled = [c for c in changes if c.kind in COMPILED_KINDS]
    elements = [c for c in changes if c.kind in fp.ELEMENT_KINDS]
    if compiled:                   # sets, then counters, then the rules naming them
        # (an empty table: every change a creation)
        counters = [c for c in elements if c.kind == "counter"]
        rest = [c for c in elements if c.kind != "counter"]
        chained = {c.key for c in compiled if c.kind == "service"}
        named = [c for c in counters if c.key[:3] in chained]
        text = script([*named, *compiled], bodies)      # the stub needs what rules name
        head, tail = compiled_messages(netns_mod.run_in_new(_compile_here, text))
        msgs = [*head, *element_messages(counters), *tail, *element_messages(rest)]
    else:                          # plan order: a counter is deleted after its elements
        msgs = element_messages(elements)
    if netns:
        sock = netns_mod.socket_in(netns_mod.path_of(netns), socket.AF_NETLINK,
                                   socket.SOCK_RAW, fp.NETLINK_NETFILTER)
    else:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, fp.NETLINK_NETFILTER)
    try:
        send(sock, msgs, meanwhile)
    finally:
        sock.close()
    return len(msgs)


# ---------------------------------------------------------------- the table's objects

def _compile_here(text: str) -> tuple[list[bytes], list[bytes], dict[str, list[bytes]],
                                      list[bytes]]:
    """(sets' NEWSET attributes, chains' NEWCHAIN attributes, chain -> its rules'
    attributes, the sets' elements as NEWSETELEM attributes) of ``text`` run by nft here
    (a fresh namespace). Named objects there (the counters chained VIP:ports' rules
    name) are not kept: the plan's own counter changes create them."""
    done = subprocess.run(["nft", "-f", "-"], input=text, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise fp.FastPathError(f"nft refused the table's objects: {done.stderr.strip()[:300]}")
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, fp.NETLINK_NETFILTER)
    try:
        sock.settimeout(30)
        sets, names, chains, rules, elements = [], [], [], {}, []
        for payload in fp._dump(sock, fp.MSG["getset"]):
            attrs = list(fp._attrs(payload[4:]))
            name = dict(attrs).get(fp.A_SET_NAME, b"\0\0\0\0")[4:].rstrip(b"\0").decode()
            if name.startswith("__"):
                raise NotBulk(f"anonymous set {name} in a rule")
            sets.append(b"".join(raw for t, raw in attrs if t in fp.SET_INPUT))
            names.append(name)
        for payload in fp._dump(sock, 4):                      # NFT_MSG_GETCHAIN
            chains.append(b"".join(raw for t, raw in fp._attrs(payload[4:])
                                   if t in CHAIN_INPUT))
        for payload in fp._dump(sock, fp.MSG["getrule"]):
            attrs = dict(fp._attrs(payload[4:]))
            chain = attrs[fp.A_CHAIN][4:].rstrip(b"\0").decode()
            rules.setdefault(chain, []).append(
                b"".join(attrs[t] for t in (fp.A_EXPRESSIONS, fp.A_USERDATA) if t in attrs))
        for name in names:
            elements += _set_elements(sock, name)
        return sets, chains, rules, elements
    finally:
        sock.close()


_u16 = struct.Struct("=H").unpack_from


def _set_elements(sock: socket.socket, name: str) -> list[bytes]:
    """Set ``name``'s elements as NEWSETELEM attributes, from a dump in which no element
    came twice. The kernel resumes a set's element dump by count: a hash set rehashed
    between two parts of it (its deferred worker growing a just-filled set, late on a
    busy machine) is walked in another order, and the dump repeats some elements and
    leaves as many out (likely the Maglev map once listed with 50,365 of its 65,537
    slots by tests/netns/test_nft_bulk.py: a quarter lost, as one reordering half way
    through loses). Each part walks every element at least once (nothing changes the
    set here; its elements carry no expiration), so a dump that repeats none left none
    out; one that does is made again."""
    request = fp._attr_str(1, TABLE) + fp._attr_str(2, name)
    for attempt in range(DUMP_TRIES):
        out: list[bytes] = []
        seen: set[bytes] = set()        # an element's attributes: a repeat, the same bytes
        dumped = 0
        for payload in fp._dump(sock, 13, request):            # NFT_MSG_GETSETELEM
            attrs = dict(fp._attrs(payload[4:]))
            listed = attrs.get(3, b"")                         # NFTA_SET_ELEM_LIST_ELEMENTS
            if len(listed) <= 4:
                continue
            off, end = 4, len(listed)
            while off + 4 <= end:                              # each NFTA_LIST_ELEM
                length = _u16(listed, off)[0]
                if length < 4:
                    break
                seen.add(listed[off:off + length])
                dumped += 1
                off += (length + 3) & ~3
            out.append(b"".join(attrs[t] for t in (1, 2, 3)))
        if dumped == len(seen):
            return out
        time.sleep(0.02 * (attempt + 1))                      # the rehash finishes
    raise fp.FastPathError(f"set {name}: each of {DUMP_TRIES} dumps of its elements "
                           f"repeated some (last: {dumped} for {len(seen)})")


def compiled_messages(compiled) -> tuple[list, list]:
    """(NEWTABLE and every set, with a batch-local id; then every chain, rule and set
    element): named counters go between the two (rules name them), and elements come
    after the chains their verdicts go to."""
    sets, chains, rules, elements = compiled
    table = fp._attr_str(fp.A_TABLE, TABLE)
    head = [(0, fp.F_CREATE, fp._attr_str(1, TABLE))]           # NFT_MSG_NEWTABLE
    for i, attrs in enumerate(sets, 1):
        head.append((fp.MSG["newset"], fp.F_CREATE,
                     attrs + fp._attr(fp.A_SET_ID, struct.pack(">I", i))))
    out = [(fp.MSG["newchain"], fp.F_CREATE, table + attrs) for attrs in chains]
    for chain, compiled_rules in rules.items():
        where = table + fp._attr_str(fp.A_CHAIN, chain)
        out += [(fp.MSG["newrule"], fp.F_CREATE | fp.F_APPEND, where + r)
                for r in compiled_rules]
    out += [(fp.MSG["newsetelem"], fp.F_CREATE, attrs) for attrs in elements]
    return head, out


# ---------------------------------------------------------------- elements

def element_messages(changes: list[Change]) -> list[tuple[int, int, bytes]]:
    """The messages of ``changes`` (flat, tally, counter) in plan order; a run of
    creates of one kind grouped set by set (the bytes :func:`fp.element_messages`
    writes, with the attribute headers of fixed-size keys and data made once)."""
    out: list[tuple[int, int, bytes]] = []
    run: dict[str, list[bytes]] = {}
    shared: dict[tuple[int, int], int] = {}     # picks elements of the run's patterns
    run_kind = None
    pack_slot = struct.Struct("=I").pack
    for c in changes:
        groupable = c.action is Action.CREATE and c.kind in ("flat", "tally")
        if (run or shared) and (not groupable or c.kind != run_kind):
            out += _flush(_with_picks(run, shared))
        if not groupable:
            out += (_counter(c) if c.kind == "counter" and c.action is Action.CREATE
                    else fp.element_messages(c))
            continue
        run_kind = c.kind
        if c.kind == "tally":
            ref = fp._attr_str(9, c.new["counter"])            # NFTA_SET_ELEM_OBJREF
            run.setdefault(counter_map(c.key), []).append(_element(fp._key(c.key[:3]), ref))
            continue
        key3 = fp._key(c.key)
        for _op, name, elems in flat.ops(c.key, None, c.new):
            if name == flat.PICKS:           # shared by a pattern's VIP:ports: once
                for (pattern, slot), data in elems:
                    shared.setdefault((pattern, slot), data)
                continue
            pending = run.setdefault(name, [])
            for slot, data in elems:
                key = key3 if slot is None else key3 + pack_slot(slot)
                pending.append(_element(key, None if data is None else _data(data)))
    out += _flush(_with_picks(run, shared))
    return out


def _with_picks(run: dict[str, list[bytes]], shared: dict) -> dict[str, list[bytes]]:
    """``run`` with the picks elements gathered in ``shared`` first (then cleared)."""
    if shared:
        pack = struct.Struct("=II").pack
        elems = [_element(pack(*key), _data(value)) for key, value in shared.items()]
        run = {flat.PICKS: elems, **run}
        shared.clear()
    return run


_TABLE = fp._attr_str(fp.A_TABLE, TABLE)
_COUNTER_TAIL = fp._attr(3, struct.pack(">I", 1)) + fp._attr(4 | fp.NESTED, b"")


def _counter(change: Change) -> list[tuple[int, int, bytes]]:
    """A named counter's NEWOBJ (as :func:`fp.element_messages` writes it)."""
    return [(fp.MSG["newobj"], fp.F_CREATE,
             _TABLE + fp._attr_str(2, counter_name(change.key)) + _COUNTER_TAIL)]


_heads: dict[tuple[int, int], bytes] = {}


def _head(atype: int, length: int) -> bytes:
    """An attribute ``atype`` holding a nested attribute 1 of ``length`` bytes: their two
    headers (``length`` a multiple of 4: no padding)."""
    got = _heads.get((atype, length))
    if got is None:
        got = _heads[(atype, length)] = struct.pack("=HHHH", 8 + length, atype, 4 + length, 1)
    return got


def _data(value) -> bytes:
    """NFTA_SET_ELEM_DATA holding NFTA_DATA_VALUE ``value`` (see fp._data)."""
    raw = fp._data(value)
    return _head(2 | fp.NESTED, len(raw)) + raw


def _element(key: bytes, data: bytes | None) -> bytes:
    """One NFTA_LIST_ELEM: the key (NFTA_SET_ELEM_KEY holding NFTA_DATA_VALUE), then
    ``data`` (an encoded attribute) if any."""
    if len(key) % 4:
        return fp._attr(1 | fp.NESTED, fp._attr(1 | fp.NESTED, fp._attr(1, key)) + (data or b""))
    body = _head(1 | fp.NESTED, len(key)) + key + (data or b"")
    return struct.pack("=HH", 4 + len(body), 1 | fp.NESTED) + body


def _flush(run: dict[str, list[bytes]]) -> list[tuple[int, int, bytes]]:
    out = []
    head = fp._attr_str(1, TABLE)
    for name, elems in run.items():
        for start in range(0, len(elems), PER_MESSAGE):
            body = b"".join(elems[start:start + PER_MESSAGE])
            out.append((fp.MSG["newsetelem"], fp.F_CREATE,
                        head + fp._attr_str(2, name) + fp._attr(3 | fp.NESTED, body)))
    run.clear()
    return out


# ---------------------------------------------------------------- sending

def send(sock: socket.socket, msgs: list[tuple[int, int, bytes]],
         meanwhile: Callable[[], object] | None = None) -> None:
    """``msgs`` as one batch, only the last asking for an ack; FastPathError with the
    kernel's errors if it refused the batch (then nothing of it applied)."""
    seq0 = 1
    last = seq0 + len(msgs)
    parts = [fp._msg(fp.BATCH_BEGIN, 0, seq0, 0, b"", fp.NFNL_SUBSYS_NFTABLES)]
    for seq, (mtype, flags, attrs) in enumerate(msgs, seq0 + 1):
        parts.append(fp._msg(mtype, flags | (fp.F_ACK if seq == last else 0), seq,
                             fp.NFPROTO_INET, attrs))
    parts.append(fp._msg(fp.BATCH_END, 0, last + 1, 0, b"", fp.NFNL_SUBSYS_NFTABLES))
    batch = b"".join(parts)
    sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
    sock.setsockopt(socket.SOL_SOCKET, fp.SO_SNDBUFFORCE, len(batch) + (1 << 16))
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 22)
    sock.settimeout(120)
    if meanwhile is None:
        sock.send(batch)
    else:                          # the kernel takes the batch in send(): GIL released
        import threading

        failed: list[BaseException] = []

        def run() -> None:
            try:
                sock.send(batch)
            except BaseException as exc:   # raised below, on the caller's thread
                failed.append(exc)

        sender = threading.Thread(target=run, name="nft-bulk-send", daemon=True)
        sender.start()
        try:
            meanwhile()
        except BaseException as exc:       # the batch may commit: its outcome first
            failed.append(exc)
        sender.join()
        if failed:
            if isinstance(failed[0], OSError):
                raise fp.FastPathError(f"sending the batch: {failed[0]}") from failed[0]
            _answer(sock, last)
            raise failed[0]
    _answer(sock, last)


def _answer(sock: socket.socket, last: int) -> None:
    """Wait for the ack of message ``last``; FastPathError at the first error."""
    errors: list[int] = []
    while True:
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            raise fp.FastPathError("no answer from nf_tables to the batch") from None
        for mtype, _flags, payload in fp._parse(data):
            if mtype != fp.NLMSG_ERROR:
                continue
            code = fp._errno(payload)
            seq = struct.unpack_from("=I", payload, 4 + 8)[0]    # the refused message's
            if code:
                errors.append(code)
            if seq == last or code:
                if errors:
                    raise fp.FastPathError(
                        "nf_tables refused the transaction, nothing of it applied: "
                        + ", ".join(os.strerror(e) for e in sorted(set(errors))))
                return
