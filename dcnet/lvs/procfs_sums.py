"""The summing pass over ``/proc/net/ip_vs``: per service, its dests' active and
inactive connections, dests of weight > 0 and dests, without a row made for any (what
the metrics read above the cardinality bound, where only the sums are exposed).

The text is read as bytes (:func:`dcnet.lvs.procfs.open_in`), :data:`PIECE` at a time:
a 10,000 x 10 table (6 MiB) is never held whole nor decoded. The dest lines of each
read are split into fields at once and checked together; a read the checks refuse is
decoded and summed service by service on text, where the strict parser of
:mod:`dcnet.lvs.procfs` names the bad line. The text format is that module's.
"""

from __future__ import annotations

import re
import socket
from binascii import unhexlify
from itertools import accumulate
from operator import itemgetter, sub

from dcnet.lvs.procfs import (
    FORWARD_BY_NAME,
    HEADER,
    PROTOCOL_BY_NAME,
    ProcFormatError,
    ServiceId,
    _dest_line,
    _service_line,
)

PIECE = 1 << 16       # what sum_read reads at a time, and sum_dests sums at a time
_HEADER = tuple(line.encode() for line in HEADER)
_FORWARDS = {name.encode() for name in FORWARD_BY_NAME}
_PROTOCOLS = {name.encode(): number for name, number in PROTOCOL_BY_NAME.items()}
# a line that is not a dest line, its text captured
_SERVICE_LINE = re.compile(rb"\n(?!  -> )([^\n]*)")
_ntoa = socket.inet_ntoa


def _text(data: bytes) -> str:
    """Bytes of the file as the strict parser reads them (UTF-8: ASCII as the kernel
    prints it; a bad byte is replaced, in an error message only)."""
    return data.decode("utf-8", "replace")


def sum_dests(text: str | bytes) -> dict[ServiceId, list[int]]:
    """Per service of the text, in the order printed, its dests summed without a row
    made for any: [active connections, inactive connections, dests of weight > 0,
    dests] (a service printed twice, as a read racing a change may show, has both
    blocks summed, as :func:`dcnet.lvs.procfs.parse` lists both). About half the cost
    of ``parse`` at 100,000 dests, and no row kept.

    The sums are those of ``parse``'s rows. The text is taken :data:`PIECE` at a time
    (:func:`sum_pieces`); the dest lines of each service (lines that start with
    ``  -> ``) are split into fields at once and checked as a whole (6 fields a line,
    a known forwarding method, decimal weight and counters); the dests' addresses are
    not decoded. Raises :class:`ProcFormatError` (its line found by the strict parser)
    on anything ip_vs_info_seq_show would not print.
    """
    return sum_pieces(text[i:i + PIECE] for i in range(0, len(text), PIECE))


def sum_read(handle, keep: int = 0) -> tuple[dict[ServiceId, list[int]], str | None]:
    """:func:`sum_dests` of the file open as ``handle`` (binary, or text), read
    :data:`PIECE` at a time, and its text when it is at most ``keep`` long (None
    otherwise: a 10,000 x 10 table is never held whole)."""
    kept: list | None = []
    size = 0

    def pieces():
        nonlocal kept, size
        while piece := handle.read(PIECE):
            size += len(piece)
            if size > keep:
                kept = None
            elif kept is not None:
                kept.append(piece)
            yield piece

    sums = sum_pieces(pieces())
    if kept is None:
        return sums, None
    return sums, "".join(kept) if not kept or isinstance(kept[0], str) else \
        b"".join(kept).decode("ascii")


def sum_pieces(pieces) -> dict[ServiceId, list[int]]:
    """:func:`sum_dests` of the text given as consecutive pieces (any cut; bytes, or
    text: encoded as UTF-8). Complete lines are summed as they arrive: a service's
    dest lines cut between two pieces are added to it in two goes."""
    out: dict[ServiceId, list[int]] = {}
    pieces = (piece if isinstance(piece, bytes) else piece.encode() for piece in pieces)
    buffer = b""
    while buffer.count(b"\n") < len(HEADER) and (piece := next(pieces, None)) is not None:
        buffer += piece
    start = _header_end(buffer)
    buffer, number, sums, cut = buffer[start:], len(HEADER) + 1, None, False
    while True:
        piece = next(pieces, None)
        if piece is not None:
            buffer += piece
            # the lines before the last newline but one: the text's last newline
            # ends its last line, it does not start an empty one (as in parse)
            last = buffer.rfind(b"\n", 0, len(buffer) - 1)
            if last < 0:
                continue
            lines, buffer, cut = buffer[:last], buffer[last + 1:], True
        else:
            lines = buffer[:-1] if buffer.endswith(b"\n") else buffer
            if not lines and not cut:
                return out
            buffer = b""
        number, sums = _sum_lines(out, number, lines, sums)
        if piece is None:
            return out


def _header_end(data: bytes) -> int:
    """Where the text after the header starts (checked line by line, in place)."""
    start = 0
    for number, expected in enumerate(_HEADER, 1):
        newline = data.find(b"\n", start)
        stop = len(data) if newline < 0 else newline
        if not data.startswith(expected, start, stop):
            raise ProcFormatError(number, _text(data[start:stop]),
                                  f"expected the header {HEADER[number - 1]!r}")
        start = stop + (newline >= 0)
    return start


def _service_key(number: int, line: bytes) -> ServiceId:
    """:func:`dcnet.lvs.procfs._service_line` of a line as bytes (an IPv4 service read
    here, any other line decoded for it)."""
    parts = line.split()
    if len(parts) > 2 and len(where := parts[1]) == 13 and where[8:9] == b":":
        protocol = _PROTOCOLS.get(parts[0])
        if protocol is not None:
            try:
                return (protocol, _ntoa(unhexlify(where[:8])), int(where[9:], 16))
            except ValueError:
                pass                    # the strict path names the problem
    return _service_line(number, _text(line))


def _sum_lines(out: dict, number: int, lines: bytes, sums: list[int] | None
               ) -> tuple[int, list[int] | None]:
    """Add ``lines`` (complete lines; the first may be dest lines of the service before,
    ``sums``) to ``out``: split at the service lines in C (each service line apart from
    its dest lines), every dest line split into fields at once, each column summed by
    running totals in C, and the services' sums added to ``out`` at once when each is
    new. Lines ``number`` on; the next line's number and the last service's sums."""
    split = _SERVICE_LINE.split(b"\n" + lines)
    # the dest lines before the first service line, then after each: each dest line
    # with the newline before it
    rests, heads = split[0::2], split[1::2]
    counts = [rest.count(b"\n") for rest in rests]
    fields = b"".join(rests).split()
    total, weights = sum(counts), fields[3::6]
    if (len(fields) != 6 * total or fields[0::6].count(b"->") != total
            or not set(fields[2::6]) <= _FORWARDS
            or not (digits := b"".join(weights)).isdigit()):    # the checks, line by line
        return _sum_blocks(out, number, _blocks(rests, heads), sums)
    try:
        active = list(accumulate(map(int, fields[4::6]), initial=0))
        inactive = list(accumulate(map(int, fields[5::6]), initial=0))
    except ValueError:
        return _sum_blocks(out, number, _blocks(rests, heads), sums)
    bounds = list(accumulate(counts, initial=0))        # each block's first dest
    at_bounds = itemgetter(*bounds)                      # 2 bounds at least: a tuple
    active, inactive = at_bounds(active), at_bounds(inactive)
    # ASCII digits: a weight is 0 when it is all zeros, "0" as the kernel prints it;
    # where a weight starts with "00" (never the kernel's), each is converted
    if b"00" in digits and b"\n00" in b"\n" + b"\n".join(weights):
        weighted = at_bounds(list(accumulate(map(bool, map(int, weights)), initial=0)))
        weighted = list(map(sub, weighted[1:], weighted[:-1]))
    else:
        weighted = [count - weights[a:b].count(b"0")
                    for count, a, b in zip(counts, bounds, bounds[1:], strict=False)]
    rows = list(map(list, zip(map(sub, active[1:], active[:-1]),
                              map(sub, inactive[1:], inactive[:-1]), weighted, counts,
                              strict=True)))
    if counts[0]:                       # dest lines of the service before
        if sums is None:
            raise ProcFormatError(number, _text(rests[0][1:].partition(b"\n")[0]),
                                  "a dest line before any service")
        for i, value in enumerate(rows[0]):
            sums[i] += value
        number += counts[0]
    # each service line's number (one more than the services when there is none)
    numbers = accumulate((count + 1 for count in counts[1:-1]), initial=number)
    keys = [_service_key(at, head) for at, head in zip(numbers, heads, strict=False)]
    number += total - counts[0] + len(keys)
    if not keys:
        return number, sums
    if len(set(keys)) == len(keys) and out.keys().isdisjoint(keys):   # each service new
        out.update(zip(keys, rows[1:], strict=True))
        return number, out[keys[-1]]
    for key, row in zip(keys, rows[1:], strict=True):    # a service printed twice
        sums = out.get(key)
        if sums is None:
            out[key] = row
        else:
            for i, value in enumerate(row):
                sums[i] += value
    return number, out[keys[-1]]


def _blocks(rests: list[bytes], heads: list[bytes]) -> list[str]:
    """The lines of :func:`_sum_lines` as text, a service line and its dest lines a
    block (the first block the dest lines before any service line, if any)."""
    first = [_text(rests[0][1:])] if rests[0] else []
    return first + [_text(head + rest) for head, rest in zip(heads, rests[1:], strict=True)]


def _sum_blocks(out: dict, number: int, blocks: list[str], sums: list[int] | None
                ) -> tuple[int, list[int] | None]:
    """:func:`_sum_lines` block by block, each checked on its own (the strict parser
    names a bad line)."""
    for block in blocks:
        if block.startswith("  -> "):   # dest lines of the service before
            if sums is None:
                raise ProcFormatError(number, block.partition("\n")[0],
                                      "a dest line before any service")
            number = _sum_dests(sums, number - 1, "", block)
            continue
        head, _, rest = block.partition("\n")
        sums = out.get(key := _service_line(number, head))
        if sums is None:
            sums = out[key] = [0, 0, 0, 0]
        number = _sum_dests(sums, number, head, rest)
    return number, sums


def _sum_dests(sums: list[int], number: int, head: str, rest: str) -> int:
    """Add the dest lines ``rest`` (after line ``number``, ``head``) to ``sums``; the
    number of the next line."""
    if not rest:
        return number + 1
    count = rest.count("\n") + 1
    fields = rest.split()
    try:
        weights = fields[3::6]
        if (len(fields) != 6 * count or fields[0::6].count("->") != count
                or not FORWARD_BY_NAME.keys() >= set(fields[2::6])):
            raise ValueError("not dest lines")
        active = sum(map(int, fields[4::6]))
        inactive = sum(map(int, fields[5::6]))
        if "".join(weights).isdigit():            # no sign: weight > 0 is weight != 0
            weighted = sum(map(bool, map(int, weights)))
        else:
            weighted = sum(int(weight) > 0 for weight in weights)
    except ValueError:          # the strict parser names the line and the field
        for i, line in enumerate(rest.split("\n"), 1):
            _dest_line(number + i, line)
        raise ProcFormatError(number, head, "bad dest lines") from None
    sums[0] += active
    sums[1] += inactive
    sums[2] += weighted
    sums[3] += count
    return number + count + 1
