"""DHCPv6 messages (RFC 8415) for the macvlan agent's stateful IPv6: build and parse.

Only what a client holding one address (IA_NA) needs: SOLICIT, REQUEST, RENEW, REBIND,
RELEASE out; ADVERTISE and REPLY in (server id, IA_NA with T1/T2 and IAADDR lifetimes,
status codes, DNS servers and domain list). The client DUID is DUID-LL (type 3) from the
MAC for ``dhcp.clientID: mac`` and DUID-UUID (type 4) derived from the pod's identity for
``pod`` (the same DUID in every incarnation of the pod). Pure functions, no I/O; the
exchange itself is ``dcnet.cni.dhcp6client``. Hostile replies (truncated options, lengths
past the end, a missing IA) raise ``ValueError`` and are dropped by the client.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct

SOLICIT, ADVERTISE, REQUEST, RENEW, REBIND, REPLY, RELEASE = 1, 2, 3, 5, 6, 7, 8
OPT_CLIENTID, OPT_SERVERID, OPT_IA_NA, OPT_IAADDR, OPT_ORO = 1, 2, 3, 5, 6
OPT_ELAPSED_TIME, OPT_STATUS_CODE, OPT_RAPID_COMMIT = 8, 13, 14
OPT_DNS_SERVERS, OPT_DOMAIN_LIST = 23, 24
STATUS_SUCCESS, STATUS_NO_ADDRS, STATUS_NO_BINDING = 0, 2, 3
INFINITY = 0xFFFFFFFF
MAX_MESSAGE = 65535


def duid(kind: str, mac: str, identity: str) -> bytes:
    """The client's DUID: DUID-UUID from ``identity`` (``pod``) or DUID-LL from ``mac``."""
    if kind == "pod":
        return struct.pack("!H", 4) + hashlib.sha256(f"dcnet-duid {identity}".encode()
                                                     ).digest()[:16]
    return struct.pack("!HH", 3, 1) + bytes(int(part, 16) for part in mac.split(":"))


def iaid(ifname: str) -> int:
    """A stable IAID per interface name."""
    return int.from_bytes(hashlib.sha256(ifname.encode()).digest()[:4], "big")


def new_xid() -> bytes:
    return os.urandom(3)


def option(code: int, data: bytes) -> bytes:
    return struct.pack("!HH", code, len(data)) + data


def ia_na(ia: int, address: bytes | None = None) -> bytes:
    inner = b""
    if address is not None:
        inner = option(OPT_IAADDR, address + struct.pack("!II", 0, 0))
    return option(OPT_IA_NA, struct.pack("!III", ia, 0, 0) + inner)


def build(kind: int, xid: bytes, client: bytes, ia: int, elapsed: float = 0.0,
          server: bytes | None = None, address: bytes | None = None) -> bytes:
    """One client message: client id, elapsed time, IA_NA (with ``address`` for REQUEST,
    RENEW, REBIND, RELEASE), server id when given, ORO for DNS (not in RELEASE)."""
    body = option(OPT_CLIENTID, client)
    body += option(OPT_ELAPSED_TIME, struct.pack("!H", min(0xFFFF, int(elapsed * 100))))
    if server is not None:
        body += option(OPT_SERVERID, server)
    body += ia_na(ia, address)
    if kind != RELEASE:
        body += option(OPT_ORO, struct.pack("!HH", OPT_DNS_SERVERS, OPT_DOMAIN_LIST))
    return bytes([kind]) + xid + body


def options(data: bytes) -> list[tuple[int, bytes]]:
    """(code, value) pairs; ValueError when an option runs past the end."""
    out, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise ValueError("truncated option header")
        code, length = struct.unpack_from("!HH", data, offset)
        if offset + 4 + length > len(data):
            raise ValueError(f"option {code} runs past the end")
        out.append((code, data[offset + 4:offset + 4 + length]))
        offset += 4 + length
    return out


def _status(value: bytes) -> tuple[int, str]:
    if len(value) < 2:
        raise ValueError("short status code")
    return struct.unpack_from("!H", value)[0], value[2:].decode("utf-8", "replace")[:200]


def _names(value: bytes) -> list[str]:
    names, labels, offset = [], [], 0
    while offset < len(value):
        length = value[offset]
        offset += 1
        if length == 0:
            names.append(".".join(labels))
            labels = []
            continue
        if length > 63 or offset + length > len(value):
            raise ValueError("bad domain list")
        labels.append(value[offset:offset + length].decode("ascii", "replace"))
        offset += length
    return names[:8]


def parse(data: bytes, xid: bytes, client: bytes, ia: int) -> dict | None:
    """A server message answering ``xid`` for this client: {type, server, status,
    address, t1, t2, preferred, valid, dns, domains}; None when it is not for us.
    ``address`` is None when the IA holds none (``status`` then says why)."""
    if len(data) < 4 or data[0] not in (ADVERTISE, REPLY) or data[1:4] != xid:
        return None
    found: dict = {"type": data[0], "server": None, "status": STATUS_SUCCESS, "message": "",
                   "address": None, "t1": None, "t2": None, "preferred": None,
                   "valid": None, "dns": [], "domains": [], "rapid": False}
    client_seen = False
    for code, value in options(data[4:]):
        if code == OPT_CLIENTID:
            client_seen = value == client
        elif code == OPT_SERVERID:
            found["server"] = value
        elif code == OPT_STATUS_CODE:
            found["status"], found["message"] = _status(value)
        elif code == OPT_RAPID_COMMIT:
            found["rapid"] = True
        elif code == OPT_DNS_SERVERS:
            found["dns"] = [socket.inet_ntop(socket.AF_INET6, value[i:i + 16])
                            for i in range(0, len(value) - 15, 16)][:8]
        elif code == OPT_DOMAIN_LIST:
            found["domains"] = _names(value)
        elif code == OPT_IA_NA:
            if len(value) < 12:
                raise ValueError("short IA_NA")
            got_ia, t1, t2 = struct.unpack_from("!III", value)
            if got_ia != ia:
                continue
            found["t1"], found["t2"] = t1, t2
            for inner, inner_value in options(value[12:]):
                if inner == OPT_STATUS_CODE:
                    found["status"], found["message"] = _status(inner_value)
                elif inner == OPT_IAADDR and len(inner_value) >= 24:
                    preferred, valid = struct.unpack_from("!II", inner_value, 16)
                    if valid == 0:
                        continue  # a withdrawn address
                    found["address"] = socket.inet_ntop(socket.AF_INET6, inner_value[:16])
                    found["preferred"], found["valid"] = preferred, valid
                    for sub, sub_value in options(inner_value[24:]):
                        if sub == OPT_STATUS_CODE:
                            found["status"], found["message"] = _status(sub_value)
    if not client_seen or found["server"] is None:
        return None
    return found


def timers(t1: int | None, t2: int | None, preferred: int | None,
           valid: int | None) -> tuple[float | None, float | None, float | None]:
    """(T1, T2, valid) in seconds, None = infinite. A T1/T2 of 0 leaves the choice to the
    client (RFC 8415 21.4: 0.5 and 0.8 of the preferred lifetime); T1 past T2 is replaced."""
    if valid is None or valid == INFINITY:
        return None, None, None
    base = preferred if preferred and preferred != INFINITY else valid
    t1 = t1 if t1 and t1 != INFINITY else None
    t2 = t2 if t2 and t2 != INFINITY else None
    first = float(t1) if t1 else 0.5 * base
    second = float(t2) if t2 else 0.8 * base
    second = min(second, float(valid))
    if first > second:
        first = 0.5 * second
    return first, second, float(valid)
