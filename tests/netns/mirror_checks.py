"""What the mirroring tests share: a packet capture in a lab namespace, the paths of
HTTP requests, the check that every copy delivered every request once and in order, and
the waits and clean-up of ``elbctl mirror`` commands."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import threading
import time

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6

from dcnet.sysio import netns as netns_mod

ETHERTYPES = {4: (0x0800, IP), 6: (0x86DD, IPv6)}


class Capture:
    """Raw IPv4 (or, ``family=6``, IPv6) packets seen in a namespace (an AF_PACKET socket
    opened there; ``ifname``: on that link only), parsed with scapy afterwards. The reader
    is a daemon thread: a test that fails before :meth:`finish` cannot keep the run open."""

    def __init__(self, lab, host: str, family: int = 4, ifname: str | None = None):
        ethertype, self.layer = ETHERTYPES[family]
        self.sock = lab.call(host, socket.socket, socket.AF_PACKET, socket.SOCK_DGRAM,
                             socket.htons(ethertype))
        if ifname is not None:          # that link only (not the namespace's loopback)
            self.sock.bind((ifname, ethertype))     # (CPython converts the order)
        self.sock.settimeout(0.1)
        self.packets: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(daemon=True, target=self._read)
        self.thread.start()

    def _read(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                self.packets.append(self.sock.recv(65535))

    def finish(self) -> list:
        self.stop.set()
        self.thread.join()
        self.sock.setblocking(False)        # what the reader had not read yet is queued
        while True:
            try:
                self.packets.append(self.sock.recv(65535))
            except BlockingIOError:
                break
        self.sock.close()
        return [self.layer(data) for data in self.packets]


def paths_of(payload: bytes) -> list[str]:
    return [line.split(b" ")[1].decode() for line in payload.split(b"\r\n")
            if line.startswith(b"GET ")]


def copies_of(entries: list[dict], wanted: list[str]) -> dict[str, list[str]]:
    """The paths each copy (a request log's source address) delivered; every copy
    delivered each of ``wanted`` (sorted) once, in order within each session."""
    by_copy: dict[str, list[str]] = {}
    for entry in entries:
        by_copy.setdefault(entry["src"].rpartition(":")[0], []).append(entry["path"])
    for source, paths in by_copy.items():
        assert sorted(paths) == wanted, source          # all delivered, no duplicate
        for session in {p.split("/")[1] for p in paths}:
            mine = [p for p in paths if p.split("/")[1] == session]
            assert mine == sorted(mine), (source, mine)  # order kept within a session
    return by_copy


def wait_until(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def stop(command: subprocess.Popen) -> None:
    """SIGTERM (the pool undoes itself), SIGKILL only if that did not end it."""
    if command.poll() is None:
        command.terminate()
        try:
            command.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            command.kill()
            command.communicate()


def pool_left(stderr: bytes) -> list[str]:
    """The namespaces of this command's pool (named on its stderr) that still exist."""
    prefix = re.search(rb"pool: \d+ namespaces (dmr[0-9a-f]{5})-", stderr).group(1).decode()
    return [n for n in netns_mod.list_names() if n.startswith(prefix + "-")]


def lines_of(path: str) -> int:
    if not os.path.exists(path):
        return 0
    with open(path) as handle:
        return sum(1 for line in handle if line.strip())
