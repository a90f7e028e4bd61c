"""JSON for the CNI hot path on the C accelerator ``_json`` alone.

``import json`` pulls in ``re``, ``enum``, ``functools`` and ``collections`` (measured
at over half of the plugin's import time); ``_json``'s scanner and encoder need none of
them. ``loads``/``dumps`` here accept and produce the same JSON as the stdlib for what a
CNI plugin exchanges (objects, arrays, strings, numbers, true/false/null); errors are
the stdlib's own ValueError (JSONDecodeError), raised by delegating to it. Off the hot
path, use the stdlib ``json``.
"""

from __future__ import annotations

import _json

_WHITESPACE = " \t\n\r"


def _constant(name: str) -> float:
    raise ValueError(f"invalid JSON constant {name}")


class _Context:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_constant)
    memo: dict = {}


_scan = _json.make_scanner(_Context())


def _no_default(obj: object) -> object:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_encode = _json.make_encoder(None, _no_default, _json.encode_basestring_ascii, None,
                             ": ", ", ", False, False, True)


def loads(data: str | bytes) -> object:
    """Parse one JSON document (surrounding whitespace allowed)."""
    if isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("utf-8")
    index = 0
    end = len(data)
    while index < end and data[index] in _WHITESPACE:
        index += 1
    if index == end:
        raise ValueError("Expecting value: empty document")
    try:
        value, index = _scan(data, index)
    except (StopIteration, SystemError):
        # Error path only: let the stdlib produce its exact error. (``_json`` imports
        # ``json.decoder`` lazily to raise JSONDecodeError, and that import fails with a
        # SystemError when the ``json`` package itself was never imported.)
        import json

        return json.loads(data)
    finally:
        _Context.memo.clear()
    while index < end and data[index] in _WHITESPACE:
        index += 1
    if index != end:
        raise ValueError(f"Extra data at char {index}")
    return value


def dumps(obj: object) -> str:
    return "".join(_encode(obj, 0))
