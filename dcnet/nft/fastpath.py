"""Small nft transactions without nft's cache: chain changes as one raw netlink batch.

nft 1.0.6 loads its cache of every chain, set and named object of the namespace before
it evaluates an ``add rule`` (``evaluate_cache_add``: TABLE|CHAIN|SET|OBJECT for every
rule command, no filter), so a three-command transaction in a table of 10k services costs
seconds. This module carries out a plan whose nft changes are only chains (``service``
and ``backend``: create, rewrite, delete) without ever running nft against the target
namespace:

1. **Compile** (in a fresh private namespace, :func:`dcnet.sysio.netns.run_in_new`):
   nft runs the chains' own ``add rule`` commands against a stub of what they name
   (the table, every chain they ``goto``, every set they look up or update, every named
   counter): nft's cache there is a handful of objects. The rules are then read back
   with one ``NFT_MSG_GETRULE`` dump: the kernel's own encoding of each rule
   (expressions and the ``dcnet:`` comment as user data), referring to chains, sets and
   counters by name only.
2. **Apply** (in the target namespace): one netlink batch, ``NFNL_MSG_BATCH_BEGIN`` ...
   ``END``, holding per change in plan order ``NEWCHAIN`` (create), ``DELRULE`` of the
   chain (flush: update, delete), the compiled rules as ``NEWRULE`` (append), and
   ``DELCHAIN`` (delete). The kernel commits the batch entirely or not at all, exactly
   as ``nft -f`` does, and it bumps the generation id once.

:func:`eligible` says which plans qualify: every change a ``service`` or ``backend``
chain, at most :data:`MAX_CHANGES`, and no rule with an anonymous set (``vmap { ... }``,
the weighted map above 32 backends: an anonymous set lives in its rule's transaction and
cannot be referred to by name). Everything else goes through ``nft -f`` as before.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
from collections.abc import Iterable, Mapping

from dcnet.nft import flat
from dcnet.nft.ruleset import FAMILY, TABLE, affinity_name, counter_map, counter_name, parse_name
from dcnet.nft.script import chain_name
from dcnet.plan import Action, Change
from dcnet.sysio import netns as netns_mod

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFPROTO_INET = 1
BATCH_BEGIN, BATCH_END = 0x10, 0x11
NLMSG_ERROR, NLMSG_DONE = 2, 3
F_REQUEST, F_ACK, F_EXCL, F_CREATE, F_APPEND, F_DUMP = 1, 4, 0x200, 0x400, 0x800, 0x300
MSG = {"newchain": 3, "delchain": 5, "newrule": 6, "getrule": 7, "delrule": 8,
       "newset": 9, "getset": 10, "delset": 11, "newsetelem": 12, "delsetelem": 14,
       "newobj": 18, "delobj": 20}
A_TABLE, A_CHAIN, A_HANDLE, A_EXPRESSIONS, A_USERDATA = 1, 2, 3, 4, 7
A_CHAIN_NAME = 3
A_SET_NAME, A_SET_ID = 2, 10
# NEWSET input attributes (a dump adds handle, type, element count: refused as input)
SET_INPUT = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 15, 17, 18})
MAX_CHANGES = 256
MAX_ELEMENTS = 16384       # set elements in one raw batch (~1 MB); more: nft -f
SO_SNDBUFFORCE = 32        # Linux; not in Python 3.11's socket module
KINDS = frozenset({"service", "backend", "affinity"})
ELEMENT_KINDS = frozenset({"flat", "tally", "counter"})   # elements and named counters
NESTED = 0x8000
PROTO_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132}
GOTO = re.compile(r"\b(?:goto|jump) ([A-Za-z0-9_.:-]+)")
SETREF = re.compile(r"@([A-Za-z0-9_.:-]+)")
ANONYMOUS = re.compile(r"(?:vmap|map|mark|saddr|daddr) \{(?! ip6? saddr \})")
COUNTER = re.compile(r"\bcounter name \"?([A-Za-z0-9_.:-]+)")


class FastPathError(RuntimeError):
    """The kernel refused the batch (nothing of it applied) or compiling failed."""


def eligible(changes: list[Change], bodies: Mapping) -> bool:
    """Can these changes go as one raw batch (see the module docstring)?"""
    if not changes or len(changes) > MAX_CHANGES:
        return False
    elements = 0
    for c in changes:
        if c.kind in ELEMENT_KINDS:
            elements += sum(len(a.get("slots", ())) + 6 for a in (c.old, c.new) if a)
            if elements > MAX_ELEMENTS:
                return False
            continue
        if c.kind not in KINDS:
            return False
        if c.action is not Action.DELETE and c.kind != "affinity":
            body = bodies.get((c.kind, c.key))
            if body is None or any(ANONYMOUS.search(line) for line in body):
                return False
    return True


def apply(netns: str | None, changes: list[Change], bodies: Mapping) -> int:
    """Carry out ``changes`` (:func:`eligible`) as one batch in ``netns``; returns the
    number of netlink messages sent. FastPathError if refused (nothing applied)."""
    chains = {chain_name(c.kind, c.key): bodies[(c.kind, c.key)]
              for c in changes if c.action is not Action.DELETE
              and c.kind not in ("affinity", *ELEMENT_KINDS)}
    sets = {affinity_name(c.key) for c in changes
            if c.action is not Action.DELETE and c.kind == "affinity"}
    compiled, compiled_sets = _compiled(chains, sets)
    msgs: list[tuple[int, int, bytes]] = []     # (type, flags, attrs)
    table = _attr_str(A_TABLE, TABLE)
    for c in changes:
        if c.kind in ELEMENT_KINDS:
            msgs += element_messages(c)
            continue
        if c.kind == "affinity":
            name = affinity_name(c.key)
            if c.action is not Action.CREATE:
                msgs.append((MSG["delset"], 0, table + _attr_str(A_SET_NAME, name)))
            if c.action is not Action.DELETE:
                if name not in compiled_sets:
                    raise FastPathError(f"set {name} was not compiled")
                set_id = _attr(A_SET_ID, struct.pack(">I", len(msgs) + 1))   # required
                msgs.append((MSG["newset"], F_CREATE, compiled_sets[name] + set_id))
            continue
        name = chain_name(c.kind, c.key)
        if c.action is Action.CREATE:
            msgs.append((MSG["newchain"], F_CREATE, table + _attr_str(A_CHAIN_NAME, name)))
        else:
            msgs.append((MSG["delrule"], 0, table + _attr_str(A_CHAIN, name)))
        if c.action is Action.DELETE:
            msgs.append((MSG["delchain"], 0, table + _attr_str(A_CHAIN_NAME, name)))
            continue
        rules = compiled.get(name, [])
        if len(rules) != len(chains[name]):
            raise FastPathError(f"compiled {len(rules)} of {len(chains[name])} rules of "
                                f"{name}")
        for attrs in rules:
            msgs.append((MSG["newrule"], F_CREATE | F_APPEND,
                         table + _attr_str(A_CHAIN, name) + attrs))
    batch = _batch(msgs)
    if netns:
        sock = netns_mod.socket_in(netns_mod.path_of(netns), socket.AF_NETLINK,
                                   socket.SOCK_RAW, NETLINK_NETFILTER)
    else:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        _send_batch(sock, batch, len(msgs))
    finally:
        sock.close()
    return len(msgs)


def element_messages(change: Change) -> list[tuple[int, int, bytes]]:
    """The raw messages of a ``flat``, ``tally`` or ``counter`` change: set elements
    (:func:`dcnet.nft.flat.ops`, a counter map's element) and named counter objects,
    encoded as nft encodes them (concatenations padded to 32-bit registers, ``mark`` and
    ``numgen`` values in host order)."""
    table = _attr_str(A_TABLE, TABLE)
    if change.kind == "counter":
        name = table + _attr_str(2, counter_name(change.key)) + _attr(3, struct.pack(">I", 1))
        if change.action is Action.DELETE:
            return [(MSG["delobj"], 0, name)]
        if change.action is Action.UPDATE:
            raise FastPathError("a counter is never updated")
        return [(MSG["newobj"], F_CREATE, name + _attr(4 | NESTED, b""))]
    if change.kind == "tally":
        key = _key(change.key[:3])
        cmap = counter_map(change.key)
        out = []
        if change.action is not Action.CREATE:
            out.append(_elements("delsetelem", cmap, [(key, None)]))
        if change.action is not Action.DELETE:
            ref = _attr_str(9, change.new["counter"])            # NFTA_SET_ELEM_OBJREF
            out.append(_elements("newsetelem", cmap, [(key, ref)]))
        return out
    out = []
    for op, name, elems in flat.ops(change.key, change.old, change.new):
        encoded = []
        for slot, data in elems:
            key = (struct.pack("=II", *slot) if isinstance(slot, tuple)   # picks: no VIP
                   else _key(change.key) + (b"" if slot is None else struct.pack("=I", slot)))
            value = None
            if data is not None:
                value = _attr(2 | NESTED, _attr(1, _data(data)))   # NFTA_SET_ELEM_DATA
            encoded.append((key, value))
        out.append(_elements("newsetelem" if op == "add" else "delsetelem", name, encoded))
    return out


def _key(key3: tuple) -> bytes:
    """VIP . proto . port as a concatenation key (each part padded to 4 bytes)."""
    proto, vip, port = key3
    return _address(vip) + struct.pack("=B3x", PROTO_NUMBERS[proto]) + struct.pack(">H2x", port)


def _data(value) -> bytes:
    """A map element's data: an integer (``mark``: host order) or ``RIP . RPORT``."""
    if isinstance(value, int):
        return struct.pack("=I", value)
    rip, rport = value.split(" . ")
    return _address(rip) + struct.pack(">H2x", int(rport))


def _address(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def _elements(msg: str, set_name: str, elems: list[tuple[bytes, bytes | None]]
              ) -> tuple[int, int, bytes]:
    """One NEWSETELEM/DELSETELEM message for ``elems`` (key, encoded data attr or
    None) of ``set_name``."""
    body = b"".join(_attr(1 | NESTED, _attr(1 | NESTED, _attr(1, key)) + (data or b""))
                    for key, data in elems)
    attrs = (_attr_str(1, TABLE) + _attr_str(2, set_name) + _attr(3 | NESTED, body))
    return MSG[msg], F_CREATE if msg == "newsetelem" else 0, attrs


# ---------------------------------------------------------------- compile

_memo: dict = {}            # (chain, rules) -> compiled rules; ("set", name) -> attributes
MEMO_MAX = 4096             # entries kept (the oldest go first)


def _compiled(chains: Mapping[str, Iterable[str]], sets: Iterable[str]
              ) -> tuple[dict[str, list[bytes]], dict[str, bytes]]:
    """:func:`compile_rules`, memoized per chain body and per set name: a service that
    goes back and forth between two states (drain and back, a health check flapping)
    compiles each state once per process. The rules are the kernel's encoding of the
    same text against names only, so the same text always compiles the same."""
    bodies = {name: tuple(body) for name, body in chains.items()}
    todo = {n: b for n, b in bodies.items() if (n, b) not in _memo}
    todo_sets = {n for n in sets if ("set", n) not in _memo}
    rules: dict[str, list[bytes]] = {}
    got: dict[str, bytes] = {}
    if todo or todo_sets:
        rules, got = compile_rules(todo, todo_sets)
        while len(_memo) + len(todo) + len(todo_sets) > MEMO_MAX and _memo:
            del _memo[next(iter(_memo))]
        _memo.update({(n, b): rules[n] for n, b in todo.items()
                      if len(rules.get(n, ())) == len(b)})     # a short one is refused
        _memo.update({("set", n): got[n] for n in todo_sets if n in got})
    out_sets = {n: _memo.get(("set", n), got.get(n)) for n in sets}
    return ({n: _memo.get((n, b), rules.get(n, [])) for n, b in bodies.items()},
            {n: v for n, v in out_sets.items() if v is not None})

def stub_script(chains: Mapping[str, Iterable[str]], wanted_sets: Iterable[str] = ()) -> str:
    """The stub of what ``chains``' rules name (and ``wanted_sets``), then the rules
    themselves (pure)."""
    T = f"{FAMILY} {TABLE}"
    lines = [f"add table {T}"]
    names, sets, counters = set(chains), set(wanted_sets), set()
    for body in chains.values():
        for line in body:
            names.update(GOTO.findall(line))
            sets.update(SETREF.findall(line))
            counters.update(COUNTER.findall(line))
    lines += [f"add chain {T} {n}" for n in sorted(names)]
    lines += [f"add counter {T} {n}" for n in sorted(counters)]
    for s in sorted(sets):
        ident = parse_name(s)
        if ident is not None and ident[0] == "affinity":
            addr = "ipv6_addr" if ":" in ident[1][1] else "ipv4_addr"
            lines.append(f"add set {T} {s} {{ type {addr}; flags dynamic,timeout; "
                         f"timeout {ident[1][5]}s; }}")
        elif ident is not None and ident[0] == "maglev":
            lines.append(f"add map {T} {s} {{ typeof numgen random mod 2 : verdict; }}")
        else:
            raise FastPathError(f"rule refers to set {s!r} the fast path cannot stub")
    for body in chains.values():
        lines += list(body)
    return "\n".join(lines) + "\n"


def compile_rules(chains: Mapping[str, Iterable[str]], sets: Iterable[str] = ()
                  ) -> tuple[dict[str, list[bytes]], dict[str, bytes]]:
    """(chain -> its rules as netlink attributes (expressions, user data), set -> its
    NEWSET attributes), compiled by nft in a private namespace."""
    text = stub_script(chains, sets)
    return netns_mod.run_in_new(_compile_here, text, set(chains), set(sets))


def _compile_here(text: str, wanted: set[str], sets: set[str]
                  ) -> tuple[dict[str, list[bytes]], dict[str, bytes]]:
    done = subprocess.run(["nft", "-f", "-"], input=text, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise FastPathError(f"nft refused the stub: {done.stderr.strip()[:300]}")
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.settimeout(30)
        out: dict[str, list[bytes]] = {name: [] for name in wanted}
        for payload in _dump(sock, MSG["getrule"]):
            attrs = dict(_attrs(payload[4:]))
            chain = attrs.get(A_CHAIN, b"\0\0\0\0")[4:].rstrip(b"\0").decode()
            if chain in out:
                out[chain].append(b"".join(attrs[t] for t in (A_EXPRESSIONS, A_USERDATA)
                                           if t in attrs))
        got: dict[str, bytes] = {}
        for payload in _dump(sock, MSG["getset"]) if sets else ():
            attrs = list(_attrs(payload[4:]))
            name = dict(attrs).get(A_SET_NAME, b"\0\0\0\0")[4:].rstrip(b"\0").decode()
            if name in sets:
                got[name] = b"".join(raw for t, raw in attrs
                                     if t in SET_INPUT)
        return out, got
    finally:
        sock.close()


def _dump(sock: socket.socket, msg: str | int, attrs: bytes | None = None):
    """The payloads of one NLM_F_DUMP request of dcnet's table's objects (``attrs``:
    the request's attributes, dcnet's table by default)."""
    request = _attr_str(A_TABLE, TABLE) if attrs is None else attrs
    sock.send(_msg(msg, F_REQUEST | F_DUMP, 1, NFPROTO_INET, request))
    while True:
        for mtype, _flags, payload in _parse(sock.recv(1 << 20)):
            if mtype == NLMSG_DONE:
                return
            if mtype == NLMSG_ERROR:
                raise FastPathError(f"dump: {os.strerror(_errno(payload))}")
            yield payload


# ---------------------------------------------------------------- netlink

def _attr(atype: int, value: bytes) -> bytes:
    head = struct.pack("=HH", 4 + len(value), atype)
    return head + value + b"\0" * (-len(value) % 4)


def _attr_str(atype: int, text: str) -> bytes:
    return _attr(atype, text.encode() + b"\0")


def _attrs(data: bytes):
    """(type without flags, raw attribute with its header and flags) of each attribute."""
    off = 0
    while off + 4 <= len(data):
        length, atype = struct.unpack_from("=HH", data, off)
        if length < 4:
            break
        yield atype & 0x3FFF, data[off:off + ((length + 3) & ~3)]
        off += (length + 3) & ~3


def _msg(mtype: int, flags: int, seq: int, family: int, attrs: bytes,
         res_id: int = 0) -> bytes:
    body = struct.pack("=BBH", family, 0, socket.htons(res_id)) + attrs
    full = mtype if mtype in (BATCH_BEGIN, BATCH_END) else (NFNL_SUBSYS_NFTABLES << 8) | mtype
    return struct.pack("=IHHII", 16 + len(body), full, flags | F_REQUEST, seq, 0) + body


def _batch(msgs: list[tuple[int, int, bytes]]) -> bytes:
    seq0 = (os.getpid() << 8) & 0x7FFFFFFF
    parts = [_msg(BATCH_BEGIN, 0, seq0, 0, b"", NFNL_SUBSYS_NFTABLES)]
    for i, (mtype, flags, attrs) in enumerate(msgs, 1):
        parts.append(_msg(mtype, flags | F_ACK, seq0 + i, NFPROTO_INET, attrs))
    parts.append(_msg(BATCH_END, 0, seq0 + len(msgs) + 1, 0, b"", NFNL_SUBSYS_NFTABLES))
    return b"".join(parts)


def _parse(data: bytes):
    off = 0
    while off + 16 <= len(data):
        length, mtype, flags, _seq, _pid = struct.unpack_from("=IHHII", data, off)
        if length < 16:
            break
        yield mtype, flags, data[off + 16:off + length]
        off += (length + 3) & ~3


def _errno(payload: bytes) -> int:
    return -struct.unpack_from("=i", payload, 0)[0]


def _send_batch(sock: socket.socket, batch: bytes, expected: int) -> None:
    sock.settimeout(30)
    size = max(len(batch) * 2, 1 << 16)
    try:            # above net.core.wmem_max (212,992 by default) as root (CAP_NET_ADMIN)
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    sock.send(batch)
    answered, errors = 0, []
    while answered < expected:
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            raise FastPathError("no answer from nf_tables to the batch") from None
        for mtype, _flags, payload in _parse(data):
            if mtype != NLMSG_ERROR:
                continue
            answered += 1
            code = _errno(payload)
            if code:
                errors.append(code)
        if errors:
            break
    if errors:
        raise FastPathError("nf_tables refused the transaction, nothing of it applied: "
                            + ", ".join(os.strerror(e) for e in sorted(set(errors))))
