"""inotify on one directory through libc (ctypes): the file store's change notification.

``Inotify(path).wait(timeout)`` returns True once something was created, removed,
renamed or written in the directory since the previous call (events queue in the
kernel meanwhile, so none is lost between calls).
"""

from __future__ import annotations

import ctypes
import os
import select

IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
MASK = IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE

_libc = ctypes.CDLL(None, use_errno=True)


class Inotify:
    """A watch on one directory."""

    def __init__(self, path: str):
        self.fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if _libc.inotify_add_watch(self.fd, os.fsencode(path), MASK) < 0:
            errno = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(errno, f"inotify_add_watch {path}: {os.strerror(errno)}")

    def _drain(self) -> bool:
        got = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return got
            if not data:
                return got
            got = True

    def wait(self, timeout: float) -> bool:
        if self._drain():
            return True
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        return bool(ready) and self._drain()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
