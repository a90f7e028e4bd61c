"""Reaching a pod's network namespace from the macvlan agent.

A netlink socket opened inside the pod's namespace (``pod_netlink``), the namespace's
identity (device, inode) that tells a live namespace from a reused path (and
``is_namespace`` a namespace from the empty file an agent in a private mount namespace
sees), sysctl writes
(``write``, run inside the namespace with ``dcnet.sysio.netns.call_here_in``), and the
per-attachment temporary link names (``temp_name``).
"""

from __future__ import annotations

import os
import socket

from dcnet.cni.nsref import resolve
from dcnet.cni.rtnl import AF_NETLINK, NETLINK_ROUTE, Netlink
from dcnet.hashing import fnv1a_64
from dcnet.sysio import netns

TEMP_PREFIX = "dcnt"
RELEASE_PREFIX = "dcnr"
IFF_UP = 1
IFF_RUNNING = 0x40


def temp_name(prefix: str, container_id: str, ifname: str) -> str:
    """A 15-character link name unique per attachment (prefix + 44 bits of FNV-1a)."""
    return f"{prefix}{fnv1a_64(f'{container_id}/{ifname}') >> 20:011x}"

def write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def pod_netlink(path: str) -> Netlink:
    """A route netlink socket inside the namespace at ``path`` (through the descriptor the
    plugin passed, when it did: ``dcnet.cni.nsref``)."""
    return Netlink(netns.socket_in(resolve(path), AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   NETLINK_ROUTE))


def netns_identity(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the namespace file at ``path``; None when it is gone."""
    try:
        st = os.stat(resolve(path))
    except OSError:
        return None
    return st.st_dev, st.st_ino


def is_namespace(identity: tuple[int, int]) -> bool:
    """Whether ``identity`` is a namespace's (nsfs), not a plain file: an agent in a
    private mount namespace sees a pod namespace mounted after it started as an empty
    file, which tells nothing about the pod."""
    return identity[0] == os.stat("/proc/self/ns/net").st_dev
