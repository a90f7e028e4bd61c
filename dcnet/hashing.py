"""The one non-cryptographic hash dcnet uses for deterministic names: 64-bit FNV-1a.

It owns ``fnv1a_64``. The CNI plugin derives link names from it (the host-gw host veth,
macvlan's temporary and release links), so the result must never change between
releases: a node upgraded mid-life still has to find the links it made. Pure, stdlib-free
(it runs on the CNI ADD path, which stays light).
"""

from __future__ import annotations

FNV64_OFFSET = 0xCBF29CE484222325
FNV64_PRIME = 0x100000001B3
_MASK64 = 0xFFFFFFFFFFFFFFFF


def fnv1a_64(data: str | bytes) -> int:
    """64-bit FNV-1a of ``data`` (text is hashed as UTF-8)."""
    value = FNV64_OFFSET
    for byte in data.encode() if isinstance(data, str) else data:
        value = ((value ^ byte) * FNV64_PRIME) & _MASK64
    return value
