"""Keeping a long-running exporter small: work in a short-lived child, freed memory returned.

Loading a 10,000 x 10 service model peaked at 265 MiB when it composed a PyYAML node
tree, and once that was freed the small objects that outlived it (the model, the labels)
were spread over the allocator's arenas, which therefore stayed resident; in the child
it peaks at 39 MiB now (the first, which reads the YAML and pickles each service as it
is read, with :class:`~dcnet.model.pieces.Packer`: the child's imports, the model's text
and the model without its real servers) and 38-41 MiB (each later one, a drift check:
its imports, and the target's check of the model a piece at a time; 88 MiB with nft and
305 MiB with a live HAProxy when the target planned the whole model; docs/metrics.md,
"Memory, the drift check a piece at a time"), which the exporter does not keep.
:func:`call` runs such work in a child process started for it (a fresh interpreter, not
a fork of a threaded process, so none of the exporter's pages count in the child's peak)
and hands back only its small, picklable result; the child's memory goes with it. The
child is ``python -I -c`` given the function and its arguments pickled on its stdin, not
``multiprocessing``'s ``spawn``: that one ran the exporter's main module again in the
child (the ``elbctl`` console script: click and the whole CLI, 3 MiB of each child's
peak) and imported ``multiprocessing`` and ``concurrent.futures`` on both sides (2 MiB).
The model goes from one such child to the next in pieces (:mod:`dcnet.model.pieces`).
:func:`one_heap` and :func:`trim` ask glibc to keep one heap for every thread and to
return its free pages after a large transient allocation (a scrape's body); elsewhere
they do nothing.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import subprocess
import sys
import traceback
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_malloc_trim: Callable[[int], int] | bool | None = False   # False: not looked up yet
_M_ARENA_MAX = -8              # glibc's malloc.h


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None)   # the symbols of this process: its C library among them


# The child: this process's sys.path first (-I: no cwd, no PYTHONPATH of its own), then
# the function and its arguments; its answer goes to the stdout it was given, and what
# it prints to stderr.
_CHILD = """import os, pickle, sys
sys.path[:] = pickle.load(sys.stdin.buffer)
answer = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)
from dcnet.metrics.isolated import _serve
_serve(sys.stdin.buffer, answer)
"""


class ChildError(RuntimeError):
    """The child ended without an answer (killed, out of memory), or its exception
    could not be pickled (its traceback is the message)."""


def call(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` in a fresh child process; its result, or its exception
    raised here (:class:`ChildError` when it has none to give; the child's traceback
    is a note of the exception when its pickling keeps notes). ``function`` must be
    importable by name (module level) and its arguments and result picklable."""
    given = pickle.dumps(list(sys.path)) + pickle.dumps((function, args), pickle.HIGHEST_PROTOCOL)
    child = subprocess.run([sys.executable, "-I", "-c", _CHILD], input=given,
                           stdout=subprocess.PIPE, check=False)
    try:
        ok, value = pickle.loads(child.stdout)
    except Exception:
        raise ChildError(f"child process exited with status {child.returncode} and no "
                         "answer") from None
    if ok:
        return value
    raise value


def _serve(given, answer) -> None:
    """In the child: run what :func:`call` sent on ``given``, answer on ``answer``."""
    try:
        function, args = pickle.load(given)
        out = (True, function(*args))
    except BaseException as exc:     # handed to the caller, whatever it is
        exc.add_note("in the child process:\n" + "".join(traceback.format_exception(exc)))
        out = (False, exc)
    try:
        data = pickle.dumps(out, pickle.HIGHEST_PROTOCOL)
        if not out[0]:
            pickle.loads(data)       # an exception that pickles but cannot be made again
    except Exception:
        text = "".join(traceback.format_exception(out[1])) if not out[0] else ""
        data = pickle.dumps((False, ChildError(text or "unpicklable result")))
    answer.write(data)
    answer.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)    # the caller has its answer: no teardown of what the work left behind


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
