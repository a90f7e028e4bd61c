"""TCP stream reassembly of the client->server side, pure (no I/O).

It owns :class:`Stream`: segments (sequence number, payload, arrival time, flags) in
any order, retransmitted or overlapping, become the request bytes in order as chunks
``(offset, time, bytes)``, the offset counted from the first data byte after the SYN.
Sequence numbers wrap modulo 2**32. Without a SYN (capture started mid-session) the
first segment seen is the origin and the stream is marked partial. Bytes never seen
stay a gap: later chunks keep their true offsets and ``missing`` counts the hole.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MOD = 1 << 32
HALF = 1 << 31


@dataclass
class Chunk:
    offset: int
    time: float
    data: bytes


@dataclass
class Stream:
    """One session's client->server bytes; feed with :meth:`add`."""

    start: float | None = None
    origin: int | None = None        # sequence number of data offset 0
    partial: bool = False
    fin_offset: int | None = None
    reset: bool = False
    delivered: int = 0               # bytes in order so far
    chunks: list[Chunk] = field(default_factory=list)
    pending: dict[int, tuple[bytes, float]] = field(default_factory=dict)
    segments: int = 0
    retransmitted: int = 0           # payload bytes seen more than once

    def add(self, seq: int, payload: bytes, time: float, syn: bool = False,
            fin: bool = False, rst: bool = False) -> None:
        self.segments += 1
        if self.start is None:
            self.start = time
        if syn:
            if self.origin is None or self.partial:
                self.origin = (seq + 1) % MOD
                self.partial = False
            seq = (seq + 1) % MOD
        elif self.origin is None:
            self.origin = seq
            self.partial = True
        offset = self._offset(seq)
        if rst:
            self.reset = True
        if fin:
            self.fin_offset = offset + len(payload)
        if not payload:
            return
        if offset + len(payload) <= self.delivered:
            self.retransmitted += len(payload)
            return
        if offset < self.delivered:
            self.retransmitted += self.delivered - offset
            payload = payload[self.delivered - offset:]
            offset = self.delivered
        old = self.pending.get(offset)
        if old is None or len(old[0]) < len(payload):
            self.pending[offset] = (payload, old[1] if old else time)
        self._drain()

    def _offset(self, seq: int) -> int:
        diff = (seq - self.origin) % MOD
        return diff - MOD if diff >= HALF else diff

    def _drain(self) -> None:
        while True:
            ready = [off for off in self.pending if off <= self.delivered]
            if not ready:
                return
            for off in sorted(ready):
                data, time = self.pending.pop(off)
                end = off + len(data)
                if end <= self.delivered:
                    self.retransmitted += len(data)
                    continue
                if off < self.delivered:
                    self.retransmitted += self.delivered - off
                self._append(self.delivered, time, data[self.delivered - off:])

    def _append(self, offset: int, time: float, data: bytes) -> None:
        self.chunks.append(Chunk(offset, time, data))
        self.delivered = offset + len(data)

    @property
    def closed(self) -> bool:
        """The client finished (FIN with every byte before it seen) or reset."""
        return self.reset or (self.fin_offset is not None and self.delivered >= self.fin_offset)

    def finish(self) -> int:
        """Flush what lies beyond gaps (kept at their offsets); returns bytes missing."""
        missing = 0
        for off in sorted(self.pending):
            data, time = self.pending.pop(off)
            if off + len(data) <= self.delivered:
                continue
            if off > self.delivered:
                missing += off - self.delivered
            else:
                data = data[self.delivered - off:]
                off = self.delivered
            self._append(off, time, data)
        if self.fin_offset is not None and self.fin_offset > self.delivered:
            missing += self.fin_offset - self.delivered
        return missing
