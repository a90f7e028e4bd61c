"""The ``dhcp-churn`` fault: the DHCP server forgets leases while their pods still use them.

What churn means here (dcnet's macvlan pods get their addresses from a DHCP server,
dnsmasq in the labs, and the agent renews them at T1): for the fault's duration, every
``period`` seconds (0: once), a DHCPRELEASE is sent to the server on behalf of each
client whose lease (read from the server's lease file, dnsmasq's format) matches
``clients`` (a regex over MAC address, host name and address). That is what dnsmasq's
``dhcp_release`` utility does, done here in Python from the server's own namespace: the
socket is bound to the server's interface (SO_BINDTODEVICE) so the server takes the
packet as arriving on it, with the server's address as server identifier. The server
then holds no lease for those pods: at their next renewal an authoritative server grants
the address again when it is still free, or NAKs it when it leased it to someone else
meanwhile (the agent then moves the pod to a new address). Nothing is reverted (the
clients' renewals bring the leases back); revert stops the repetition. To take the
server away instead, use ``kill``/``stop`` on dnsmasq.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import struct
import threading

from dcnet.sysio import netns

_churners: dict[str, tuple[threading.Thread, threading.Event]] = {}
_lock = threading.Lock()
MAGIC = b"\x63\x82\x53\x63"


class ChurnError(RuntimeError):
    """The lease file cannot be read."""


def leases(path: str) -> list[dict]:
    """dnsmasq's lease file: ``expiry mac address hostname client-id`` per line (IPv4)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise ChurnError(f"lease file {path}: {exc}") from None
    out = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", fields[1]):
            try:
                ipaddress.IPv4Address(fields[2])
            except ValueError:
                continue
            out.append({"mac": fields[1].lower(), "address": fields[2], "hostname": fields[3],
                        "clientid": fields[4] if len(fields) > 4 and fields[4] != "*" else ""})
    return out


def matching(path: str, pattern: str) -> list[dict]:
    regex = re.compile(pattern)
    return [lease for lease in leases(path)
            if any(regex.search(lease[k]) for k in ("mac", "hostname", "address"))]


def release_packet(lease: dict, server: str) -> bytes:
    """A DHCPRELEASE (RFC 2131) for ``lease`` to ``server`` (pure)."""
    chaddr = bytes.fromhex(lease["mac"].replace(":", "")).ljust(16, b"\0")
    header = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0,
                         int.from_bytes(os.urandom(4), "big"), 0, 0,
                         socket.inet_aton(lease["address"]), bytes(4), bytes(4), bytes(4),
                         chaddr, bytes(64), bytes(128))
    options = bytes([53, 1, 7, 54, 4]) + socket.inet_aton(server)
    if lease["clientid"]:
        cid = bytes.fromhex(lease["clientid"].replace(":", ""))
        options += bytes([61, len(cid)]) + cid
    return header + MAGIC + options + b"\xff"


def _send(interface: str, server: str, packets: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        for packet in packets:
            sock.sendto(packet, (server, 67))


def release(record: dict) -> list[str]:
    """Send one round of releases; the addresses released."""
    found = matching(record["leasefile"], record["clients"])
    packets = [release_packet(lease, record["server"]) for lease in found]
    if packets:
        netns.run_in(record["namespace"], _send, record["interface"], record["server"],
                     packets)
    return [lease["address"] for lease in found]


def _repeat(record: dict, stop: threading.Event) -> None:
    while not stop.wait(record["period"]):
        try:
            release(record)
        except (ChurnError, OSError):
            continue


def apply(record: dict) -> None:
    record["released"] = release(record)
    if record["period"] > 0:
        stop = threading.Event()
        thread = threading.Thread(target=_repeat, args=(record, stop), daemon=True,
                                  name="chaos-dhcp-churn")
        with _lock:
            _churners[record["key"]] = (thread, stop)
        thread.start()


def revert(record: dict) -> str:
    with _lock:
        churner = _churners.pop(record.get("key", ""), None)
    if churner:
        churner[1].set()
        churner[0].join(30)
    return (f"dhcp-churn in {record['namespace']}: stopped (leases come back with the "
            "clients' renewals)")
