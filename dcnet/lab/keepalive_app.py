"""A keep-alive HTTP/1.1 app with a graceful SIGTERM, for the LVS rolling-restart lab.

Run by path (stdlib only, so ``python -I -S`` starts it without the venv's packages: the
kernel lab's emulation makes every import cost):

    python -I -S keepalive_app.py PORT NAME

Every request (any method, any path) gets 200 and the body NAME (no newline); the
connection stays open (HTTP/1.1) until the client closes it or asks ``Connection:
close``. On SIGTERM the app stops accepting (closes its listening socket), closes each
idle keep-alive connection (FIN; a client that sent a request at that instant sees the
connection die before any answer, and a real client retries it on a fresh connection),
answers each request in flight or arriving on a connection it was reading with
``Connection: close``, and once every connection is closed (at most ``GRACE`` seconds)
it dies of SIGTERM itself, so its parent sees 128+15 (what dcnet-init passes on). It
prints a line with the time at SIGTERM and at exit (the lab's timeline).
Used by dcnet.lab.init_lvs_lab.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import threading
import time

GRACE = 8.0                 # below dcnet-init's --grace 10 of the lab
MAX_HEAD = 65536


def serve(port: int, name: str) -> None:
    body = name.encode()
    wake_r, wake_w = os.pipe()                   # readable once SIGTERM arrived
    os.set_blocking(wake_w, False)
    stopping = threading.Event()
    threads: list[threading.Thread] = []
    live: set[int] = set()                       # connections accepted and not yet closed
    open_at_term = []

    def on_term(_signo, _frame) -> None:
        open_at_term.append(len(live))
        stopping.set()

    # whichever thread the kernel hands SIGTERM to, the interpreter writes to wake_w at
    # once (only the main thread runs on_term, and only once its select() returns)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGTERM, on_term)
    listener = socket.create_server(("", port), backlog=512)

    def handle(conn: socket.socket) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    if buf:                  # a request in flight: finish reading it
                        watch, timeout = [conn], 60.0
                    elif stopping.is_set():  # idle at SIGTERM: only what already arrived
                        watch, timeout = [conn], 0.0
                    else:
                        watch, timeout = [conn, wake_r], 60.0
                    ready, _, _ = select.select(watch, [], [], timeout)
                    if conn not in ready:
                        if wake_r in ready:
                            continue
                        return               # idle at SIGTERM, or silent for 60 s: close
                    data = conn.recv(MAX_HEAD)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                close = stopping.is_set() or b"connection: close" in head.lower()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: %d\r\n%s\r\n%s"
                             % (len(body), b"Connection: close\r\n" if close else b"", body))
                if close:
                    return
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
            live.discard(conn.fileno())
            conn.close()

    while not stopping.is_set():
        ready, _, _ = select.select([listener, wake_r], [], [])
        if listener in ready and not stopping.is_set():
            conn, _ = listener.accept()
            live.add(conn.fileno())              # counted before its thread can answer
            thread = threading.Thread(target=handle, args=(conn,), daemon=True)
            thread.start()
            threads.append(thread)
            threads[:] = [t for t in threads if t.is_alive()]
    listener.close()
    print(f"{time.time():.3f} {name}: SIGTERM with {open_at_term[0]} connection(s) open",
          flush=True)
    deadline = time.monotonic() + GRACE
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    left = sum(1 for t in threads if t.is_alive())
    print(f"{time.time():.3f} {name}: exiting ({left} connection(s) left open)", flush=True)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2])
