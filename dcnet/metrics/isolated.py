"""Keeping a long-running exporter small: work in a short-lived child, freed memory returned.

Loading a 10,000 x 10 service model peaked at 265 MiB when it composed a PyYAML node
tree, and once that was freed the small objects that outlived it (the model, the labels)
were spread over the allocator's arenas, which therefore stayed resident; in the child
it peaks at 54 MiB now (the first, which reads the YAML) and 49 MiB (each later one),
the child's imports, the model itself and, in the first, the model's text
(docs/metrics.md, "Memory, the loader children: services read as parsed"), which the
exporter does not keep. :func:`call` runs such work in a child process started for it
(``spawn``: a fresh interpreter, not a fork of a threaded process, so none of the
exporter's pages count in the child's peak) and hands back only its small, picklable
result; the child's memory goes with it.
:func:`pack_model` and :func:`unpack_model` hand a model from one such child to the
next in pieces: a pickler's memo, which holds every object written (and the argument
tuples their ``__reduce__`` made) until the end, then lives for 1,000 services at a
time (pickling a 10,000 x 10 model whole added 30 MiB to the first child's peak,
unpickling it 27 MiB to each later child's); :class:`Unpacked` reads such pieces one at
a time, for an index built after the model is freed.
:func:`one_heap` and :func:`trim` ask glibc to keep one heap for every thread and to
return its free pages after a large transient allocation (a scrape's body); elsewhere
they do nothing.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import dataclasses
import multiprocessing
import pickle
import zlib
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_malloc_trim: Callable[[int], int] | bool | None = False   # False: not looked up yet
_M_ARENA_MAX = -8              # glibc's malloc.h
SERVICES_PER_PIECE = 1000


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None)   # the symbols of this process: its C library among them


def call(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` in a fresh child process; its result, or its exception
    raised here. ``function`` must be importable by name (module level) and its
    arguments and result picklable."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


def pack_model(model, per_piece: int = SERVICES_PER_PIECE) -> tuple[bytes, ...]:
    """``model`` (a :class:`dcnet.model.Model`) pickled and compressed in pieces: the
    model without its services, then its services ``per_piece`` at a time (0.3 MiB in
    all at 10,000 x 10); :func:`unpack_model` makes it again."""
    services = model.services
    pieces = [dataclasses.replace(model, services=())]
    pieces += (services[start:start + per_piece]
               for start in range(0, len(services), per_piece))
    return tuple(_pickled(piece) for piece in pieces)


def _pickled(piece) -> bytes:
    return zlib.compress(pickle.dumps(piece, pickle.HIGHEST_PROTOCOL), 6)


class Packer:
    """:func:`pack_model`'s pieces made as the model is read: pass :meth:`spill` to
    :func:`dcnet.model.load_model`, which hands it each service as it is read and keeps
    the service without its real servers; :meth:`pieces` of the model it returns are
    then what :func:`pack_model` makes of the whole model (the same bytes), though the
    whole model was never held (at 10,000 x 10 its 100,000 real servers, 14 MiB of the
    first loader child's peak; docs/metrics.md). A model the loader did not spill
    (anchors or aliases: the composed path) is packed whole, as :func:`pack_model` does."""

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
            return pack_model(model, self.per_piece)     # not spilled: read whole
        tail = [_pickled(tuple(self.pending))] if self.pending else []
        return (_pickled(dataclasses.replace(model, services=())), *self.made, *tail)


def unpack_model(pieces: tuple[bytes, ...]):
    """The model :func:`pack_model` packed, one piece unpickled at a time."""
    head, *rest = pieces
    services = []
    for piece in rest:
        services.extend(pickle.loads(zlib.decompress(piece)))
    return dataclasses.replace(pickle.loads(zlib.decompress(head)), services=tuple(services))


class Unpacked:
    """What :meth:`dcnet.metrics.elb.ServiceIndex.of` reads of a model (``services``,
    iterated once), from the pieces :func:`pack_model` made: each piece is unpickled as
    it is reached, so the index is built without the whole model in memory."""

    def __init__(self, pieces: tuple[bytes, ...]):
        self.pieces = pieces

    @property
    def services(self):
        for piece in self.pieces[1:]:
            yield from pickle.loads(zlib.decompress(piece))


def one_heap() -> bool:
    """Let every thread allocate from glibc's main heap (``mallopt(M_ARENA_MAX, 1)``),
    before threads start: each scrape runs in a new thread, and the pages a thread's
    own arena kept after a scrape stayed resident (10 MiB at 10,000 services, trimmed
    or not); False where there is no such call."""
    function = getattr(_libc(), "mallopt", None)
    return bool(function is not None and function(_M_ARENA_MAX, 1))


def trim() -> bool:
    """Return the C heap's free pages to the kernel (glibc ``malloc_trim(0)``, every
    arena); False where there is no such call."""
    global _malloc_trim
    if _malloc_trim is False:
        function = getattr(_libc(), "malloc_trim", None)
        if function is not None:
            function.argtypes, function.restype = [ctypes.c_size_t], ctypes.c_int
        _malloc_trim = function
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True
