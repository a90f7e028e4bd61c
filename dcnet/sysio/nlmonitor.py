"""Who changes routes, rules, addresses and nftables in a network namespace: a netlink
monitor of the kernel's change notifications, with the process behind each change.

Two sockets opened in the namespace (``netns``, a path; default: the caller's):
rtnetlink subscribed to the IPv4/IPv6 route, rule and address groups, and nfnetlink
subscribed to ``NFNLGRP_NFTABLES``. What the kernel says of the author:

- rtnetlink: a notification's ``nlmsg_pid`` is the netlink port id of the socket whose
  request made the change (0: the kernel itself, e.g. the local routes of an address).
  A socket bound by the kernel gets its process's pid as port id (iproute2's ``ip``);
  pyroute2 binds ``pid + (n << 22)``, so the low 22 bits are tried too; any other id
  names no process ("port N").
- nftables: every committed transaction ends with ``NFT_MSG_NEWGEN`` carrying
  ``NFTA_GEN_PROC_PID`` and ``NFTA_GEN_PROC_NAME`` (what ``nft monitor`` prints as "by
  process PID (comm)"); the object notifications before it (tables, chains, rules,
  sets, elements, ...) are attributed to it.

A pid means something only while its process exists: a reader thread takes each
notification as it arrives and reads ``/proc/PID/{comm,cmdline,status}`` then (a
process gone by then keeps its pid, and for nftables its comm). Changes are kept in
memory (at most ``keep``; the oldest dropped first, counted in ``dropped``); a
receive buffer overrun (``ENOBUFS``) is counted in ``overruns``: those changes are
lost, their authors unknown. :meth:`mark` forgets what was recorded until now;
:meth:`changes` returns what was recorded since, after reading everything the kernel
has queued (so a change made before the call returned is in it).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import pwd
import select
import socket
import struct
import threading
import time
from collections import deque

NETLINK_ROUTE, NETLINK_NETFILTER = 0, 12
SOL_NETLINK, NETLINK_ADD_MEMBERSHIP = 270, 1
# rtnetlink multicast groups: IPv4 ifaddr, route, rule; IPv6 ifaddr, route, rule
RT_GROUPS = (5, 7, 8, 9, 11, 19)
NFNLGRP_NFTABLES = 7
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWGEN = 15
NLMSG_HDR = struct.Struct("=IHHII")
RTA_HDR = struct.Struct("=HH")
RT_TYPES = {20: ("address", "new"), 21: ("address", "del"), 24: ("route", "new"),
            25: ("route", "del"), 32: ("rule", "new"), 33: ("rule", "del")}
NFT_OBJECTS = {0: ("table", "new"), 2: ("table", "del"), 3: ("chain", "new"),
               5: ("chain", "del"), 6: ("rule", "new"), 8: ("rule", "del"),
               9: ("set", "new"), 11: ("set", "del"), 12: ("element", "new"),
               14: ("element", "del"), 18: ("object", "new"), 20: ("object", "del"),
               22: ("flowtable", "new"), 24: ("flowtable", "del")}
NFT_FAMILIES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}
PYROUTE2_PID_BITS = 22
CMDLINE_MAX = 256


def attributes(data: bytes, offset: int) -> dict[int, bytes]:
    """The netlink attributes from ``offset`` (type without the nested/byte-order flags
    -> payload; pure)."""
    out = {}
    while offset + RTA_HDR.size <= len(data):
        length, kind = RTA_HDR.unpack_from(data, offset)
        if length < RTA_HDR.size:
            break
        out[kind & 0x3FFF] = data[offset + RTA_HDR.size:offset + length]
        offset += (length + 3) & ~3
    return out


def _address(raw: bytes | None) -> str:
    if raw is None:
        return ""
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(raw))
    return raw.hex()


def _text(raw: bytes | None) -> str:
    return (raw or b"").split(b"\0", 1)[0].decode(errors="replace")


def describe_rt(kind: str, data: bytes) -> str:
    """A route, rule or address notification's object as one line (pure)."""
    if kind == "address":
        _family, plen, _flags, _scope, index = struct.unpack_from("=BBBBI", data, 0)
        attrs = attributes(data, 8)
        return f"{_address(attrs.get(2) or attrs.get(1))}/{plen} dev #{index}"
    _family, dst_len, src_len, _tos, table, proto, _scope, _type, _flags = \
        struct.unpack_from("=BBBBBBBBI", data, 0)
    attrs = attributes(data, 12)
    if 15 in attrs:
        table = struct.unpack("=I", attrs[15][:4])[0]
    if kind == "rule":
        prio = struct.unpack("=I", attrs[6][:4])[0] if 6 in attrs else None
        src = f"from {_address(attrs.get(2))}/{src_len} " if 2 in attrs else "from all "
        dst = f"to {_address(attrs.get(1))}/{dst_len} " if 1 in attrs else ""
        return f"{src}{dst}lookup {table}" + (f" prio {prio}" if prio is not None else "")
    dst = f"{_address(attrs[1])}/{dst_len}" if 1 in attrs else "default"
    via = f" via {_address(attrs[5])}" if 5 in attrs else ""
    oif = f" dev #{struct.unpack('=I', attrs[4][:4])[0]}" if 4 in attrs else ""
    return f"{dst}{via}{oif} table {table} proto {proto}"


def describe_nft(kind: str, data: bytes) -> str:
    """An nftables object notification as one line: family, table and name (pure)."""
    family = NFT_FAMILIES.get(data[0], str(data[0])) if data else "?"
    attrs = attributes(data, 4)
    table = _text(attrs.get(1))
    name = {"chain": 3, "rule": 2, "set": 2, "element": 2, "object": 2,
            "flowtable": 2}.get(kind)
    return f"{family} {table}" + (f" {_text(attrs.get(name))}" if name in attrs else "")


def process(pid: int) -> dict | None:
    """What /proc says of ``pid`` now: comm, cmdline (at most CMDLINE_MAX characters),
    real uid and its user name, parent pid; None when it is gone."""
    base = f"/proc/{pid}"
    try:
        with open(f"{base}/comm", "rb") as handle:
            comm = handle.read().decode(errors="replace").strip()
        with open(f"{base}/cmdline", "rb") as handle:
            cmdline = handle.read(4096).replace(b"\0", b" ").decode(errors="replace")
        with open(f"{base}/status") as handle:
            status = dict(line.split(":", 1) for line in handle if ":" in line)
    except OSError:
        return None
    uid = int(status.get("Uid", "-1").split()[0])
    try:
        user = pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        user = str(uid)
    return {"pid": pid, "comm": comm, "cmdline": cmdline.strip()[:CMDLINE_MAX],
            "uid": uid, "user": user, "ppid": int(status.get("PPid", "0").split()[0])}


def author_of_port(port: int) -> dict:
    """The process behind a netlink port id (see the module docstring)."""
    if port == 0:
        return {"pid": 0, "comm": "kernel"}
    candidates = [port]
    if port < 1 << 31 and port >> PYROUTE2_PID_BITS:
        candidates.append(port & ((1 << PYROUTE2_PID_BITS) - 1))
    for pid in candidates:
        found = process(pid)
        if found is not None:
            return found
    return {"pid": None, "comm": None, "port": port,
            "note": f"netlink port {port} names no running process"}


class Monitor:
    """Records route, rule, address and nftables changes with their authors."""

    def __init__(self, netns: str | None = None, keep: int = 256):
        self.netns, self.keep = netns, keep
        self._lock = threading.Lock()
        self._changes: deque[dict] = deque(maxlen=keep)
        self._nft_pending: list[dict] = []
        self.dropped = self.overruns = 0
        self._socks: list[socket.socket] = []
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread: threading.Thread | None = None
        self._closed = False

    def _open(self, proto: int, groups: tuple[int, ...]) -> socket.socket:
        kind = socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        if self.netns:
            from dcnet.sysio.netns import socket_in

            sock = socket_in(self.netns, socket.AF_NETLINK, kind, proto)
        else:
            sock = socket.socket(socket.AF_NETLINK, kind, proto)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)   # SO_RCVBUFFORCE
        sock.bind((0, 0))
        for group in groups:
            sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
        return sock

    def start(self) -> Monitor:
        """Open both sockets in the namespace and start reading (OSError when the
        kernel refuses)."""
        try:
            self._socks = [self._open(NETLINK_ROUTE, RT_GROUPS),
                           self._open(NETLINK_NETFILTER, (NFNLGRP_NFTABLES,))]
        except BaseException:
            self.close()
            raise
        self._thread = threading.Thread(target=self._run, name="nlmonitor", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self._lock:
            for sock in self._socks:
                sock.close()
            self._socks = []
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake_r = self._wake_w = -1

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        while not self._closed:
            socks = list(self._socks)
            try:
                ready, _, _ = select.select([*socks, self._wake_r], [], [], 1.0)
            except (OSError, ValueError):
                return
            if any(s is not self._wake_r for s in ready):
                self._drain()

    def _drain(self) -> None:
        with self._lock:
            for index, sock in enumerate(self._socks):
                while True:
                    try:
                        data = sock.recv(1 << 16)
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        if exc.errno == errno.ENOBUFS:
                            self.overruns += 1
                            continue
                        break
                    self._parse(data, nft=index == 1)

    def _parse(self, data: bytes, nft: bool) -> None:
        offset = 0
        while offset + NLMSG_HDR.size <= len(data):
            length, kind, _flags, _seq, port = NLMSG_HDR.unpack_from(data, offset)
            if length < NLMSG_HDR.size:
                return
            body = data[offset + NLMSG_HDR.size:offset + length]
            offset += (length + 3) & ~3
            try:
                if nft:
                    self._nft(kind, body, port)
                elif kind in RT_TYPES:
                    what, action = RT_TYPES[kind]
                    self._record({"kind": what, "action": action,
                                  "what": describe_rt(what, body),
                                  "by": author_of_port(port)})
            except (struct.error, IndexError):
                continue

    def _nft(self, kind: int, body: bytes, port: int) -> None:
        if kind >> 8 != NFNL_SUBSYS_NFTABLES:
            return
        message = kind & 0xFF
        if message in NFT_OBJECTS:
            what, action = NFT_OBJECTS[message]
            self._nft_pending.append({"kind": "nft", "action": f"{action} {what}",
                                      "what": describe_nft(what, body), "port": port})
        elif message == NFT_MSG_NEWGEN:
            attrs = attributes(body, 4)
            pid = struct.unpack(">I", attrs[2][:4])[0] if 2 in attrs else None
            name = _text(attrs.get(3)) or None
            author = (process(pid) if pid else None) or {"pid": pid, "comm": name}
            if name and author.get("comm") != name:     # pid reused since: trust the kernel
                author = {"pid": pid, "comm": name}
            pending, self._nft_pending = self._nft_pending, []
            for change in pending or [{"kind": "nft", "action": "commit", "what": "",
                                       "port": port}]:
                change.pop("port", None)
                self._record({**change, "by": author})

    def _record(self, change: dict) -> None:
        if len(self._changes) == self.keep:
            self.dropped += 1
        self._changes.append({"time": time.time(), **change})

    @property
    def lost(self) -> int:
        """Changes lost since the last mark: dropped beyond ``keep``, and receive buffer
        overruns (each one or more notifications)."""
        return self.dropped + self.overruns

    def mark(self) -> None:
        """Forget what was recorded so far (after reading what the kernel queued)."""
        self._drain()
        with self._lock:
            self._changes.clear()
            self._nft_pending = []
            self.dropped = self.overruns = 0

    def changes(self) -> list[dict]:
        """What was recorded since the last mark, oldest first (after reading what the
        kernel queued)."""
        self._drain()
        with self._lock:
            return list(self._changes)
