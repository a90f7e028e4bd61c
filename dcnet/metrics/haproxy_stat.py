"""HAProxy's ``show stat`` read for the ELB collector, and its series (pure).

Backends are named ``<JOBNAME>:<port>`` (:mod:`dcnet.haproxy.layout`); free server slots
are servers in maintenance at ``0.0.0.0``. A director of 10,000 services x 10 real servers
answers 150,000 rows (36 MiB), so the parser takes the rows one at a time, splits each
only up to the columns it needs (``type`` is the 33rd), names each backend once, and
reads ``addr`` (the 74th) only for servers in maintenance, the one state a free slot can
be in. The filled server slots are kept column by column (:class:`ServerRows`: 100,000
at 10,000 x 10 take 4.5 MiB instead of 17 MiB as a tuple and an address string each);
the per-server families are written from them. Above the cardinality bound the collector
asks HAProxy for backend rows alone (``show stat -1 2 -1``): a backend row's ``act`` is
HAProxy's own count of usable servers (up, weight > 0, not in maintenance), which is all
the per-service series need.
"""

from __future__ import annotations

import socket
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from dcnet.metrics.exposition import Family, escape

SERVER_STATES = ("up", "down", "drain", "maint")
BACKENDS_ONLY = "-1 2 -1"        # show stat filters: every proxy, type 2 (backends)
BACKENDS_AND_SERVERS = "-1 6 -1"  # types 2 and 4
NEEDED = ("pxname", "type", "scur", "stot", "bin", "bout", "status", "weight")


class HAProxyServer(NamedTuple):
    """One filled server slot."""

    service: str
    port: str
    server: str          # address:port of the real server
    state: str           # up, down, drain, maint
    sessions: int
    sessions_total: int


class HAProxyBackend(NamedTuple):
    service: str
    port: str
    sessions: int
    sessions_total: int
    bytes_in: int
    bytes_out: int
    usable: int | None   # the row's ``act``: usable servers (None: column missing)


_COUNT_MAX = 2**64 - 1                # what an array("Q") holds


class ServerRows:
    """The filled server slots of one answer, column by column: the backend's number in
    ``names`` (its service and port), the state's in :data:`SERVER_STATES`, the current
    and total sessions, and the address, UTF-8, at ``ends[i - 1]:ends[i]`` of one
    buffer. 100,000 servers (10,000 x 10) take about 4.5 MiB so, against 17 MiB as named
    tuples with an address string each, held while the per-server families are
    written. Iterated, :class:`HAProxyServer` tuples, made one at a time."""

    __slots__ = ("addresses", "backends", "counts", "ends", "names", "states")

    def __init__(self, names: list[tuple[str, str]] | None = None):
        self.names = [] if names is None else names       # (service, port) by number
        self.backends = array("I")
        self.states = bytearray()
        self.counts: array | list[int] = array("Q")   # sessions, sessions_total, ...
        self.addresses = bytearray()
        self.ends = array("Q")

    def append(self, backend: int, server: str, state: int, sessions: int,
               sessions_total: int) -> None:
        """One server: ``backend`` a number in ``names``, ``state`` one in
        :data:`SERVER_STATES`."""
        if (sessions > _COUNT_MAX or sessions_total > _COUNT_MAX) \
                and type(self.counts) is array:
            self.counts = self.counts.tolist()    # past 64 bits: ints, as HAProxy printed
        self.backends.append(backend)
        self.states.append(state)
        self.counts.append(sessions)
        self.counts.append(sessions_total)
        self.addresses += server.encode()
        self.ends.append(len(self.addresses))

    def __len__(self) -> int:
        return len(self.backends)

    def columns(self) -> Iterator[tuple[str, str, str, int, int]]:
        """Per server: service, port, address, state number, current sessions."""
        names, addresses, counts = self.names, memoryview(self.addresses), self.counts
        start = 0
        for i, (backend, state, end) in enumerate(zip(self.backends, self.states,
                                                      self.ends, strict=True)):
            service, port = names[backend]
            yield service, port, str(addresses[start:end], "utf-8"), state, counts[2 * i]
            start = end

    def __iter__(self) -> Iterator[HAProxyServer]:
        counts = self.counts
        for i, (service, port, server, state, sessions) in enumerate(self.columns()):
            yield HAProxyServer(service, port, server, SERVER_STATES[state], sessions,
                                counts[2 * i + 1])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServerRows):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __repr__(self) -> str:
        return f"ServerRows({list(self)!r})"


@dataclass
class HAProxyStats:
    backends: list[HAProxyBackend] = field(default_factory=list)
    servers: ServerRows = field(default_factory=ServerRows)
    server_rows_read: bool = False     # False: backend rows only were asked for


def _split_backend(name: str) -> tuple[str, str] | None:
    service, sep, port = name.rpartition(":")
    return (service, port) if sep and port.isdigit() else None


UP, DOWN, DRAIN, MAINT = range(4)         # numbers of SERVER_STATES


def _state(status_text: str, weight: str) -> int:
    """The number in :data:`SERVER_STATES` of a server row's state."""
    text = status_text.upper()
    if text.startswith("MAINT"):
        return MAINT
    if text.startswith("DRAIN") or (text.startswith("UP") and weight == "0"):
        return DRAIN
    if text.startswith("UP") or text == "NO CHECK":
        return UP
    return DOWN


def _int(text: str) -> int:
    return int(text) if text.isdigit() else 0


def stream(path: str, command: str, timeout: float = 10.0) -> Iterator[str]:
    """The lines of HAProxy's answer to ``command`` on its UNIX socket, as they arrive
    (64 KiB reads): the answer never exists whole (36 MiB of ``show stat`` with server
    rows at 10,000 x 10, and its copies). Connects when first iterated; OSError (and
    TimeoutError) when HAProxy is not there or stops answering."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        rest = b""
        while data := sock.recv(65536):
            *whole, rest = (rest + data).split(b"\n")
            for line in whole:
                yield line.decode(errors="replace")
        if rest:
            yield rest.decode(errors="replace")
    finally:
        sock.close()


def parse_show_stat(text: str | Iterable[str]) -> HAProxyStats:
    """Pure: backends and filled server slots of dcnet listeners from ``show stat``
    (its text, or its lines: :func:`stream`; frontends and foreign proxies are
    skipped)."""
    lines = _lines(text) if isinstance(text, str) else iter(text)
    header = next(lines, "")
    if not header.startswith("# "):
        return HAProxyStats()
    column = {name: i for i, name in enumerate(header[2:].split(","))}
    if any(name not in column for name in NEEDED):
        return HAProxyStats()
    px, kind, scur, stot, bin_, bout, status, weight = (column[c] for c in NEEDED)
    act, addr = column.get("act"), column.get("addr")
    width = max(px, kind, scur, stot, bin_, bout, status, weight, act or 0)
    out = HAProxyStats()
    backends, servers = out.backends, out.servers
    names = servers.names
    seen: dict[str, int | None] = {}        # backend name: its number in names
    for line in lines:
        fields = line.split(",", width + 1)
        if len(fields) <= width:
            continue
        row_type = fields[kind]
        if row_type != "1" and row_type != "2":
            continue
        name = fields[px]
        number = seen.get(name, False)
        if number is False:
            split = _split_backend(name)
            number = seen[name] = None if split is None else len(names)
            if split is not None:
                names.append(split)
        if number is None:
            continue
        if row_type == "1":
            usable = _int(fields[act]) if act is not None else None
            backends.append(HAProxyBackend(*names[number], _int(fields[scur]),
                                           _int(fields[stot]), _int(fields[bin_]),
                                           _int(fields[bout]), usable))
            continue
        out.server_rows_read = True
        state = _state(fields[status], fields[weight])
        if addr is None:
            address = ""
        elif addr <= width:
            address = fields[addr]
        else:                         # ``addr`` is in the unsplit rest of the row
            address = _tail_field(fields[width + 1], addr - width - 1) \
                if len(fields) > width + 1 else ""
        if state == MAINT and (not address or address.startswith("0.0.0.0:")):
            continue                  # a free slot
        servers.append(number, address, state, _int(fields[scur]), _int(fields[stot]))
    return out


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` one at a time: the rows of a large answer never exist
    together as strings (as many bytes again as the answer: 36 MiB with server rows at
    10,000 x 10)."""
    start = 0
    while (end := text.find("\n", start)) >= 0:
        yield text[start:end]
        start = end + 1
    yield text[start:]


def _tail_field(tail: str, index: int) -> str:
    """Field ``index`` of the unsplit rest of a row."""
    parts = tail.split(",", index + 1)
    return parts[index] if len(parts) > index else ""


def service_port_labels(service: str, port: str) -> str:
    """``{port="...",service="..."}`` as :func:`~dcnet.metrics.exposition.labels` writes
    it, four times faster: formatted at every scrape (10,000 backends: 4 ms) rather than
    kept between scrapes (3.3 MiB of resident label text)."""
    return f'{{port="{escape(port)}",service="{escape(service)}"}}'


def families(stats: HAProxyStats, carriers: dict[str, tuple[str, ...]], per_server: bool,
             ) -> tuple[list[Family], dict[tuple[str, str, str], int]]:
    """The HAProxy families of one scrape and the healthy count per (service, port,
    carrier) (for ``dcnet_elb_vip_healthy_servers``)."""
    sessions = Family("dcnet_haproxy_backend_sessions", "Current sessions", "gauge")
    total = Family("dcnet_haproxy_backend_sessions", "Sessions since start", "counter")
    bytes_in = Family("dcnet_haproxy_backend_bytes_in", "Bytes from clients", "counter")
    bytes_out = Family("dcnet_haproxy_backend_bytes_out", "Bytes to clients", "counter")
    rows = stats.servers
    by_state: dict[int, list[int]] = {}     # backend number: servers per state
    for backend, state in zip(rows.backends, rows.states, strict=True):
        counts = by_state.get(backend)
        if counts is None:
            counts = by_state[backend] = [0] * len(SERVER_STATES)
        counts[state] += 1
    numbers = None
    healthy: dict[tuple[str, str, str], int] = {}
    for b in stats.backends:
        usable = b.usable
        if usable is None:                  # no ``act`` column: count the up rows
            if numbers is None:
                numbers = {name: i for i, name in enumerate(rows.names)}
            usable = by_state.get(numbers.get((b.service, b.port)), (0,))[UP]
        for carrier in carriers.get(b.service, ("",)):
            healthy[(b.service, b.port, carrier)] = usable
    # the sample lines are made as each family is written, from the rows (kept anyway)
    for family, column in ((sessions, 2), (total, 3), (bytes_in, 4), (bytes_out, 5)):
        family.extend(_backend_lines(family, stats.backends, column))
    out = [sessions, total, bytes_in, bytes_out]
    if stats.server_rows_read:
        servers = Family("dcnet_haproxy_backend_servers", "Real servers by state",
                         "gauge", ("service", "port", "state"))
        servers.extend(servers.line(state_labels(*rows.names[backend], state), count)
                       for backend, counts in by_state.items()
                       for state, count in zip(SERVER_STATES, counts, strict=True))
        out.append(servers)
    if per_server:
        up = Family("dcnet_haproxy_server_up", "1 when the real server is up", "gauge")
        cur = Family("dcnet_haproxy_server_sessions", "Current sessions", "gauge")
        up.extend(_server_lines(up, rows, True))
        cur.extend(_server_lines(cur, rows, False))
        out += [up, cur]
    return out, healthy


def _server_lines(family: Family, rows: ServerRows, up: bool) -> Iterator[str]:
    """Per server, ``dcnet_haproxy_server_up`` (with its state label) or its current
    sessions, as :func:`server_labels` labels a :class:`HAProxyServer`."""
    for service, port, server, state, sessions in rows.columns():
        head = f'{{port="{escape(port)}",server="{escape(server)}",service="{escape(service)}"'
        if up:
            yield family.line(f'{head},state="{SERVER_STATES[state]}"}}', int(state == UP))
        else:
            yield family.line(f"{head}}}", sessions)


def _backend_lines(family: Family, backends: list[HAProxyBackend], column: int
                   ) -> Iterator[str]:
    for b in backends:
        yield family.line(service_port_labels(b.service, b.port), b[column])


def state_labels(service: str, port: str, state: str) -> str:
    """``{port,service,state}`` as :func:`~dcnet.metrics.exposition.labels` writes it."""
    return f'{{port="{escape(port)}",service="{escape(service)}",state="{state}"}}'


def server_labels(s: HAProxyServer, state: str | None = None) -> str:
    """``{port,server,service[,state]}`` as :func:`~dcnet.metrics.exposition.labels`
    writes it."""
    tail = "}" if state is None else f',state="{state}"}}'
    return (f'{{port="{escape(s.port)}",server="{escape(s.server)}",'
            f'service="{escape(s.service)}"{tail}')
