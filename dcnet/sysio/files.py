"""Writing files so that a crash leaves either the old or the new content, never a mix.

It owns ``atomic_write``: the one way dcnet replaces a file. The data goes to a
temporary file beside the target (same directory, so the rename stays on one file
system), is optionally fsynced, gets its mode, and is renamed over the target with
``os.replace``; with ``fsync=True`` the directory is fsynced too, so the rename itself
survives a power loss. On any failure the temporary file is removed and the target is
left as it was.
"""

from __future__ import annotations

import contextlib
import os


def atomic_write(path: str | os.PathLike, data: str | bytes, mode: int = 0o644,
                 fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8) atomically.

    The temporary file is ``.<name>.<random>.tmp`` in the target's directory (hidden and
    with a suffix no reader of ours lists). ``mode`` is set explicitly (the umask does
    not apply). ``fsync=False`` skips both fsyncs: the rename is still atomic for
    readers, only durability across a power loss is given up.
    """
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, temporary = _create_temporary(directory, os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    if fsync:
        fsync_directory(directory)


def _create_temporary(directory: str, name: str) -> tuple[int, str]:
    """A new file ``<directory>/.<name>.<random>.tmp`` (0600), as ``tempfile.mkstemp``
    makes it; tempfile itself is not imported, because the CNI plugin's ADD path calls
    ``atomic_write`` and must stay light."""
    while True:
        temporary = os.path.join(directory, f".{name}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                           0o600), temporary
        except FileExistsError:
            continue


def fsync_directory(directory: str | os.PathLike) -> None:
    """fsync ``directory`` so that renames and creations in it are durable."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
