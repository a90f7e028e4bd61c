"""Rendering operator template overrides defensively (HAProxy and keepalived templates).

An operator's template directory is code that elbctl and every director's agent run, so
a template is rendered in jinja2's sandbox (no escape through ``__class__`` and friends;
``range`` of at most 100,000 items), with ``*`` and ``**`` refused when the result would
be huge, a deadline (a watchdog thread raises in a thread still rendering after
``RENDER_SECONDS``, so a loop that never ends stops; nothing is traced meanwhile) and an
output limit. Any failure, jinja2's own (syntax, undefined
variable) or one the template raises (division by zero, recursion, ...), becomes a
:class:`TemplateFailure` whose message starts with the template file and line.
"""

from __future__ import annotations

import ctypes
import threading
import time

import jinja2
from jinja2.sandbox import SandboxedEnvironment

RENDER_SECONDS = 10.0
MAX_OUTPUT = 16 << 20          # characters of one rendered template
MAX_POWER = 1 << 16            # a ** b: b at most this


class TemplateFailure(Exception):
    """A template that could not be rendered; ``where`` is ``file:line`` when known."""

    def __init__(self, where: str, message: str, timed_out: bool = False):
        self.where, self.timed_out = where, timed_out
        super().__init__(f"{where}: {message}" if where else message)


class _Timeout(Exception):
    pass


def _template_code(filename: str) -> bool:
    return filename.endswith(".j2") or filename == "<template>"


def _size(value) -> int | None:
    return len(value) if isinstance(value, str | bytes | list | tuple) else None


class BoundedEnvironment(SandboxedEnvironment):
    """jinja2's sandbox, with ``*`` and ``**`` checked before they allocate."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                size = _size(seq)
                if size is not None and isinstance(times, int) and size * times > MAX_OUTPUT:
                    raise OverflowError(f"a sequence of {size} x {times} is too large")
        if operator == "**" and isinstance(right, int) and right > MAX_POWER:
            raise OverflowError(f"an exponent of {right} is too large")
        return super().call_binop(context, operator, left, right)


def environment(loader: jinja2.BaseLoader) -> BoundedEnvironment:
    return BoundedEnvironment(loader=loader, undefined=jinja2.StrictUndefined,
                              autoescape=False, keep_trailing_newline=True)


def locate(exc: BaseException) -> str:
    """``file:line`` of the template where ``exc`` arose ('' when unknown)."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"{exc.filename or exc.name or '<template>'}:{exc.lineno}"
    where, tb = "", exc.__traceback__
    while tb is not None:
        if _template_code(tb.tb_frame.f_code.co_filename):
            where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


_watched: dict[int, list] = {}       # thread id -> [deadline, fired]
_watch_lock = threading.Lock()
_watchdog: threading.Thread | None = None


def _async_raise(thread_id: int, exc_type: type | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc_type) if exc_type
                                               else None)


def _watch() -> None:
    """Raise _Timeout in a thread still rendering past its deadline (at its next
    bytecode: no cost while rendering, unlike a trace function)."""
    while True:
        time.sleep(0.2)
        now = time.monotonic()
        with _watch_lock:
            for thread_id, entry in _watched.items():
                if now > entry[0] and not entry[1]:
                    entry[1] = True
                    _async_raise(thread_id, _Timeout)


def _watch_me(deadline: float) -> None:
    global _watchdog
    with _watch_lock:
        _watched[threading.get_ident()] = [deadline, False]
        if _watchdog is None:
            _watchdog = threading.Thread(target=_watch, name="template-watchdog", daemon=True)
            _watchdog.start()


def _unwatch() -> None:
    thread_id = threading.get_ident()
    with _watch_lock:
        entry = _watched.pop(thread_id, None)
        if entry is not None and entry[1]:
            _async_raise(thread_id, None)    # fired but not delivered yet: cancel it


def render(env: jinja2.Environment, name: str, **context) -> str:
    """Template ``name`` of ``env`` rendered with ``context``, or TemplateFailure."""
    chunks, size = [], 0
    try:
        try:
            template = env.get_template(name)
            _watch_me(time.monotonic() + RENDER_SECONDS)
            for chunk in template.generate(**context):
                size += len(chunk)
                if size > MAX_OUTPUT:
                    raise OverflowError(f"renders more than {MAX_OUTPUT} characters")
                chunks.append(chunk)
        finally:
            _unwatch()
    except _Timeout as exc:
        _unwatch()
        raise TemplateFailure(locate(exc), f"still rendering after {RENDER_SECONDS:g} s "
                              "(a loop that does not end?)", timed_out=True) from None
    except jinja2.TemplateNotFound as exc:
        raise TemplateFailure("", f"template {exc.name} not found") from None
    except Exception as exc:  # anything a template can raise (RecursionError included)
        raise TemplateFailure(locate(exc), f"{type(exc).__name__}: {exc}") from None
    return "".join(chunks)
