"""Reachability probes run inside lab hosts: ICMP echo and TCP connect.

Probes only ever target addresses inside the lab's own namespaces; they are bounded by a
short timeout and a single attempt.
"""

from __future__ import annotations

import socket

from dcnet.lab.builder import Lab


def tcp_connect(address: str, port: int, timeout: float = 2.0) -> bool:
    """One TCP handshake from the calling namespace; True when it completed."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def tcp_probe(lab: Lab, host: str, address: str, port: int) -> bool:
    return bool(lab.call(host, tcp_connect, address, port))


def ping(lab: Lab, host: str, address: str) -> bool:
    """One ICMP echo from ``host`` to ``address`` (1 s deadline)."""
    done = lab.run(host, ["ping", "-n", "-q", "-c", "1", "-W", "1", address], check=False)
    return done.returncode == 0
