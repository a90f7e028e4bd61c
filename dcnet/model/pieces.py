"""A model handed on in pieces: pickled and compressed, its services 1,000 at a time.

``elbctl exporter``'s loader child parses the model once and hands it back so
(:mod:`dcnet.metrics.isolated`); each later child reads it from these pieces, and a
target's drift check (:meth:`dcnet.target.Target.drifted`) may read it one piece at a
time, never holding the whole model. A pickler's memo holds every object written (and
the argument tuples their ``__reduce__`` made) until the end, so pickling a 10,000 x 10
model whole added 30 MiB to a child's peak and unpickling it 27 MiB; here the memo
lives for one piece.

:func:`pack` makes the pieces of a model, :class:`Packer` the same bytes while the
loader reads the model (its ``spill``: the whole model is never held), :func:`unpack`
the model again, :class:`Pieces` reads them a piece at a time.
"""

from __future__ import annotations

import dataclasses
import pickle
import zlib
from collections.abc import Iterator

SERVICES_PER_PIECE = 1000


def pack(model, per_piece: int = SERVICES_PER_PIECE) -> tuple[bytes, ...]:
    """``model`` (a :class:`dcnet.model.Model`) pickled and compressed in pieces: the
    model without its services, then its services ``per_piece`` at a time (0.3 MiB in
    all at 10,000 x 10); :func:`unpack` makes it again."""
    services = model.services
    pieces = [dataclasses.replace(model, services=())]
    pieces += (services[start:start + per_piece]
               for start in range(0, len(services), per_piece))
    return tuple(_pickled(piece) for piece in pieces)


def _pickled(piece) -> bytes:
    return zlib.compress(pickle.dumps(piece, pickle.HIGHEST_PROTOCOL), 6)


def _unpickled(piece: bytes):
    return pickle.loads(zlib.decompress(piece))


class Packer:
    """:func:`pack`'s pieces made as the model is read: pass :meth:`spill` to
    :func:`dcnet.model.load_model`, which hands it each service as it is read and keeps
    the service without its real servers; :meth:`pieces` of the model it returns are
    then what :func:`pack` makes of the whole model (the same bytes), though the whole
    model was never held (at 10,000 x 10 its 100,000 real servers, 14 MiB of the first
    loader child's peak; docs/metrics.md). A model the loader did not spill (anchors or
    aliases: the composed path) is packed whole, as :func:`pack` does."""

    def __init__(self, per_piece: int = SERVICES_PER_PIECE):
        self.per_piece = per_piece
        self.made: list[bytes] = []
        self.pending: list = []
        self.jobs: list = []   # each spilled service's JobName: the model's are the same

    def spill(self, service) -> None:
        self.pending.append(service)
        self.jobs.append(service.job)
        if len(self.pending) == self.per_piece:
            self.made.append(_pickled(tuple(self.pending)))
            self.pending.clear()

    def pieces(self, model) -> tuple[bytes, ...]:
        services = model.services
        if len(services) != len(self.jobs) or any(
                s.job is not job for s, job in zip(services, self.jobs, strict=True)):
            if any(s.job is job for s, job in zip(services, self.jobs, strict=False)):
                raise ValueError("a model partly spilled")      # the loader never does
            return pack(model, self.per_piece)           # not spilled: read whole
        tail = [_pickled(tuple(self.pending))] if self.pending else []
        return (_pickled(dataclasses.replace(model, services=())), *self.made, *tail)


def unpack(pieces: tuple[bytes, ...]):
    """The model :func:`pack` packed, one piece unpickled at a time."""
    whole = Pieces(pieces)
    return dataclasses.replace(whole.head(), services=tuple(whole.services))


class Pieces:
    """A model read from :func:`pack`'s pieces as it is needed: :meth:`head` (the model
    without its services), :meth:`chunks` (its services, one piece's tuple at a time,
    each unpickled as it is reached), :attr:`services` (all of them, one at a time: what
    :meth:`dcnet.metrics.elb.ServiceIndex.of` reads) and :meth:`whole` (the model)."""

    def __init__(self, pieces: tuple[bytes, ...]):
        self.pieces = pieces

    def head(self):
        return _unpickled(self.pieces[0])

    def chunks(self) -> Iterator[tuple]:
        for piece in self.pieces[1:]:
            yield _unpickled(piece)

    @property
    def services(self) -> Iterator:
        for chunk in self.chunks():
            yield from chunk

    def models(self) -> Iterator:
        """The head with each piece's services: models of a few services each, in
        order, whose services together are the model's."""
        head = self.head()
        for chunk in self.chunks():
            yield dataclasses.replace(head, services=chunk)

    def whole(self):
        return unpack(self.pieces)
