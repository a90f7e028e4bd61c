"""Reading the model's input files defensively: bounded size, UTF-8 only, confined paths.

A model and its carriers' CIDR lists come from operators and from whoever can write next
to them, so nothing here trusts a file: :func:`read_bounded` never reads more than the
limit plus one byte (``-f /dev/zero``, a FIFO or a growing file is refused as soon as it
passes the limit), :func:`decode_utf8` refuses anything that is not UTF-8 and names the
byte offset and line of the first bad byte, and :func:`confine` keeps a file a model
names inside the model's directory or an explicit allow-list (``DCNET_MODEL_PATHS``).
Every failure is an :class:`InputError` carrying a line where one makes sense; messages
never quote the file's contents.
"""

from __future__ import annotations

import os
import stat

MAX_MODEL_BYTES = 16 * 1024 * 1024     # about 70,000 services of the bench's model
MAX_LIST_BYTES = 16 * 1024 * 1024      # a CIDR list file
ALLOW_ENV = "DCNET_MODEL_PATHS"        # extra directories a model may name files in
_CHUNK = 1 << 16
_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
         (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))


class InputError(ValueError):
    """A file that cannot be used; ``line`` is where the problem is, when one is known;
    ``unreadable`` when the operating system refused (the message is its reason)."""

    def __init__(self, message: str, line: int | None = None, unreadable: bool = False):
        self.line, self.unreadable = line, unreadable
        super().__init__(message)


def read_bounded(path: str, limit: int) -> bytearray:
    """The bytes of ``path``, refusing a file (regular or not) of more than ``limit``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise InputError(exc.strerror or str(exc), unreadable=True) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise InputError("Is a directory", unreadable=True)
        if stat.S_ISREG(info.st_mode) and info.st_size > limit:
            raise InputError(f"file is {info.st_size} bytes, more than the limit of "
                             f"{limit} bytes", line=1)
        data = bytearray()
        while len(data) <= limit:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - len(data)))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise InputError(exc.strerror or str(exc), unreadable=True) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise InputError(f"more than the limit of {limit} bytes (stopped reading there)",
                         line=data.count(b"\n", 0, limit) + 1)
    return data


def decode_utf8(data: bytes | bytearray) -> str:
    """``data`` as text: UTF-8 only (a leading UTF-8 byte order mark is dropped)."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise InputError(f"not UTF-8: starts with a {name} byte order mark "
                             "(save the file as UTF-8)", line=1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} "
                         f"({exc.reason})", line=data.count(b"\n", 0, exc.start) + 1) from None
    return text[1:] if text.startswith("\ufeff") else text


def read_text(path: str, limit: int) -> str:
    """:func:`read_bounded` then :func:`decode_utf8`."""
    return decode_utf8(read_bounded(path, limit))


def allowed_dirs(base: str, extra: list[str] | None = None) -> list[str]:
    """The directories a model in ``base`` may name files in: ``base``, ``extra`` and
    every directory of ``$DCNET_MODEL_PATHS`` (separated by ':'), symlinks resolved."""
    dirs = [base, *(extra or ())]
    dirs += [d for d in os.environ.get(ALLOW_ENV, "").split(os.pathsep) if d]
    return [os.path.realpath(d) for d in dirs]


def confine(base: str, name: str, allowed: list[str]) -> str:
    """The real path of file ``name`` (relative to ``base``) if it lies inside one of
    ``allowed``; raises InputError otherwise (``..``, absolute paths and symlinks
    leading out are all caught, because the resolved path is what is checked)."""
    if not name or "\0" in name:
        raise InputError("not a usable file name")
    real = os.path.realpath(os.path.join(base, name))
    for directory in allowed:
        if os.path.commonpath([directory, real]) == directory:
            return real
    raise InputError(f"{name!r} is outside the model's directory (allow other directories "
                     f"with {ALLOW_ENV}=DIR[:DIR...])")
