"""Host-local style IPAM for one node subnet: a pure allocator and its reservation files.

``next_free`` is the pure round-robin choice. ``Reservations`` keeps one file per
allocated address in ``<dataDir>/<network>/`` (named by the address, holding
``containerID\\r\\nifname`` exactly as host-local writes it), ``last_reserved_ip.0`` for
round-robin and a ``lock`` file; every change happens under an exclusive ``flock`` on
that lock file and every reservation file is created with O_EXCL, so concurrent ADDs can
never hand out one address twice. Addresses are integers of one family: a
``Reservations`` is made for ``ip4`` (the default) or ``ip6``; both families share the
directory as host-local's range sets do (IPv6 files are named by the compressed address,
round-robin in ``last_reserved_ip.1``), and each only sees its own files.
"""

from __future__ import annotations

import fcntl
import os
import sys

from dcnet.cni import ip4
from dcnet.cni.errors import ADDRESS_UNAVAILABLE, NO_FREE_ADDRESS, CniError
from dcnet.sysio.files import atomic_write

ModuleType = type(sys)  # types.ModuleType without importing types

LAST_RESERVED = "last_reserved_ip.0"
LAST_RESERVED_V6 = "last_reserved_ip.1"
LOCK = "lock"
LINE_BREAK = "\r\n"


def pool(net: int, plen: int, family: ModuleType = ip4) -> tuple[int, int, int]:
    """(gateway, first, last) of a node subnet: .1 (::1) is the bridge, the rest go to
    pods (short of the broadcast, or of the last IPv6 address)."""
    if plen > (30 if family is ip4 else 126):
        raise ValueError(f"a node subnet needs at least /{30 if family is ip4 else 126}")
    gateway = net + 1
    return gateway, gateway + 1, family.broadcast(net, plen) - 1


def next_free(first: int, last: int, used: set[int], last_reserved: int | None) -> int | None:
    """Round-robin: the first free address after ``last_reserved``, wrapping; None if full."""
    size = last - first + 1
    start = first
    if last_reserved is not None and first <= last_reserved <= last:
        start = last_reserved + 1 if last_reserved < last else first
    for step in range(size):
        candidate = first + (start - first + step) % size
        if candidate not in used:
            return candidate
    return None


class Reservations:
    """The reservation directory of one network on one node."""

    def __init__(self, directory: str, family: ModuleType = ip4):
        self.dir = directory
        self.fam = family
        self.last_file = LAST_RESERVED if family is ip4 else LAST_RESERVED_V6
        self._lock_fd: int | None = None

    # ------------------------------------------------------------ locking

    def __enter__(self) -> Reservations:
        os.makedirs(self.dir, mode=0o755, exist_ok=True)
        fd = os.open(f"{self.dir}/{LOCK}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock_fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    # ------------------------------------------------------------ reading

    def all(self) -> dict[int, tuple[str, str]]:
        """{address: (containerID, ifname)} of every reservation file."""
        out = {}
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return out
        for name in names:
            try:
                address = self.fam.parse_ip(name)
            except ValueError:
                continue
            owner = self.owner(address)
            if owner is not None:
                out[address] = owner
        return out

    def owner(self, address: int) -> tuple[str, str] | None:
        try:
            with open(f"{self.dir}/{self.fam.fmt_ip(address)}") as handle:
                text = handle.read()
        except FileNotFoundError:
            return None
        lines = text.replace("\r\n", "\n").split("\n")
        return lines[0].strip(), (lines[1].strip() if len(lines) > 1 else "")

    def find(self, container_id: str, ifname: str) -> list[int]:
        return sorted(a for a, o in self.all().items() if o == (container_id, ifname))

    def last_reserved(self) -> int | None:
        try:
            with open(f"{self.dir}/{self.last_file}") as handle:
                return self.fam.parse_ip(handle.read().strip())
        except (FileNotFoundError, ValueError):
            return None

    # ------------------------------------------------------------ changing (hold the lock)

    def addresses(self) -> set[int]:
        """Reserved addresses, from the file names alone (no file is read)."""
        out = set()
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return out
        parse = self.fam.parse_ip
        for name in names:
            if name[:1] not in "l.":  # lock, last_reserved_ip.N, temporary files
                try:
                    out.add(parse(name))
                except ValueError:
                    continue
        return out

    def reserve(self, container_id: str, ifname: str, net: int, plen: int,
                requested: int | None = None) -> int:
        """Reserve a free address (``requested`` if given) of net/plen for the attachment.

        A retried ADD gets a second reservation that its failing veth step then undoes, so
        no file but the names is read here: the ADD path stays O(names).
        """
        self._require_lock()
        taken = self.addresses()
        fam = self.fam
        _, first, last = pool(net, plen, fam)
        if requested is not None:
            if not first <= requested <= last:
                raise CniError(ADDRESS_UNAVAILABLE,
                               f"requested address {fam.fmt_ip(requested)} is outside this "
                               f"node's pool {fam.fmt_ip(first)}-{fam.fmt_ip(last)}")
            if requested in taken:
                owner = self.owner(requested) or ("?", "?")
                raise CniError(ADDRESS_UNAVAILABLE,
                               f"requested address {fam.fmt_ip(requested)} is already "
                               f"allocated to {owner[0]}/{owner[1]}")
            address = requested
        else:
            address = next_free(first, last, taken, self.last_reserved())
            if address is None:
                raise CniError(NO_FREE_ADDRESS,
                               f"no IP addresses available in {fam.fmt_cidr(net, plen)}",
                               f"{len(taken)} reservations in {self.dir}")
        self._write_new(address, f"{container_id}{LINE_BREAK}{ifname}")
        if requested is None:
            self._write_replace(self.last_file, fam.fmt_ip(address))
        return address

    def release(self, container_id: str, ifname: str) -> list[int]:
        """Remove every reservation of the attachment; returns what was released."""
        self._require_lock()
        released = self.find(container_id, ifname)
        for address in released:
            self.release_address(address)
        return released

    def release_address(self, address: int) -> bool:
        self._require_lock()
        try:
            os.unlink(f"{self.dir}/{self.fam.fmt_ip(address)}")
        except FileNotFoundError:
            return False
        return True

    def gc(self, valid: set[tuple[str, str]]) -> list[tuple[int, str, str]]:
        """Release reservations whose (containerID, ifname) is not in ``valid``."""
        self._require_lock()
        released = []
        for address, (cid, ifname) in sorted(self.all().items()):
            if (cid, ifname) not in valid and self.release_address(address):
                released.append((address, cid, ifname))
        return released

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError("Reservations: changes need the lock (use 'with')")

    def _write_new(self, name: str | int, text: str) -> None:
        path = f"{self.dir}/{self.fam.fmt_ip(name) if isinstance(name, int) else name}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def _write_replace(self, name: str, text: str) -> None:
        atomic_write(f"{self.dir}/{name}", text, fsync=False)
