"""The live replay worker: one copy's sessions, sent to the target as the capture sees them.

It owns the incremental HTTP/1.1 request cutter (pure, :func:`next_request`) and the
worker process that :mod:`dcnet.mirror.live` starts inside the copy's own network
namespace (so the copy's source address is its own). The worker reads events from its
stdin, one JSON line each: first ``{"config": {"headers": [...], "key": "<hex>"}}``
(the request headers to anonymise, possibly none), then ``{"s": ID, "d": "<base64>"}``
(the session's next in-order client bytes) and ``{"s": ID, "end": "fin"|"rst"|"open"}``.
Each session gets its own thread and its own connection to the target, opened at its
first bytes. While the bytes parse as HTTP/1.1 requests (Content-Length or no body),
each complete request is sent and its answer read before the next (keep-alive, request
boundaries); from the first bytes that do not, the session is raw TCP: bytes are sent
as they come while a reader thread collects the answer, and at the end the write side is
shut and the answer read to EOF. One
result line per session goes to ``--out`` (the same fields as
:mod:`dcnet.mirror.replay`'s). At stdin's end every open session is ended and the
worker exits once each has finished (or after ``--linger`` seconds).

Run (by :mod:`dcnet.mirror.live`): ``python -m dcnet.mirror.live_worker --target IP:PORT
--out copy-0.jsonl``
"""

from __future__ import annotations

import argparse
import base64
import json
import queue
import socket
import sys
import threading
import time

from dcnet.mirror import anonymise, recording
from dcnet.mirror.replay import read_response
from dcnet.mirror.rules import split_address

MAX_HEAD = 64 << 10     # a header block longer than this is not taken as HTTP


def next_request(buffer: bytes) -> tuple[bytes | None, bytes, bool]:
    """``(request, rest, http)``: the first complete HTTP/1.1 request of ``buffer`` (None
    while incomplete) and what follows; ``http`` is False once the bytes cannot be such
    requests (no request line, chunked body, a bad Content-Length)."""
    line_end = buffer.find(b"\r\n")
    if line_end < 0:
        return None, buffer, len(buffer) < MAX_HEAD
    parts = buffer[:line_end].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[0].isalpha():
        return None, buffer, False
    head, sep, after = buffer.partition(b"\r\n\r\n")
    if not sep:
        return None, buffer, len(buffer) < MAX_HEAD
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            return None, buffer, False
        if name == b"content-length":
            if not value.strip().isdigit():
                return None, buffer, False
            length = int(value)
    if len(after) < length:
        return None, buffer, True
    return head + sep + after[:length], after[length:], True


class _Reader:
    """Reads a raw session's answer while its bytes are still being sent (a server that
    answers as it reads cannot then block on a full send buffer)."""

    def __init__(self, sock: socket.socket, start: bytes):
        self.sock, self.data, self.error = sock, start, None
        self.closing = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                more = self.sock.recv(65536)
            except TimeoutError as exc:     # a quiet server while the client still sends
                if self.closing:
                    self.error = exc
                    return
                continue
            except OSError as exc:
                self.error = exc
                return
            if not more:
                return
            self.data += more

    def result(self) -> bytes:
        """The answer to EOF (after the caller shut the write side)."""
        self.closing = True
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.data


class LiveSession:
    """One session of one copy: a thread fed through a queue (bytes, then None)."""

    def __init__(self, session_id: str, target: tuple[str, int], report, headers: tuple,
                 key: bytes, timeout: float = 10.0):
        self.id, self.target, self.report = session_id, target, report
        self.headers, self.key, self.timeout = headers, key, timeout
        self.events: queue.Queue = queue.Queue()
        self.end = "open"
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _redact(self, request: bytes) -> bytes:
        if not self.headers:
            return request
        one = recording.Session(self.id, "", "", 0.0, chunks=(recording.Chunk(0, 0, request),))
        return anonymise.redact_session(one, self.headers, self.key).payload

    def _run(self) -> None:
        result = {"id": self.id, "sent": 0, "answers": [], "error": None, "mode": "http",
                  "latencies": [], "requests": 0}
        begin = time.monotonic()
        buffer, http, rest = b"", True, b""
        reader: _Reader | None = None
        try:
            with socket.create_connection(self.target, timeout=self.timeout) as sock:
                result["source"] = "{}:{}".format(*sock.getsockname()[:2])
                while True:
                    data = self.events.get()
                    if data is not None:
                        buffer += data
                    while http and buffer:
                        request, left, http = next_request(buffer)
                        if request is None:
                            break
                        buffer = left
                        request = self._redact(request)
                        sent_at = time.monotonic()
                        sock.sendall(request)
                        result["sent"] += len(request)
                        result["requests"] += 1
                        answer, rest = read_response(sock, rest)
                        result["latencies"].append(round(time.monotonic() - sent_at, 6))
                        result["answers"].append(base64.b64encode(answer).decode())
                    if not http and buffer:         # raw TCP from here on
                        reader = reader or _Reader(sock, rest)
                        result["mode"] = "raw"
                        sock.sendall(buffer)
                        result["sent"] += len(buffer)
                        buffer = b""
                    if data is None:
                        break
                if buffer:                          # a last request never completed
                    reader = reader or _Reader(sock, rest)
                    result["mode"] = "raw"
                    sock.sendall(buffer)
                    result["sent"] += len(buffer)
                if reader is not None:
                    result["requests"] = 1
                    sock.shutdown(socket.SHUT_WR)
                    answer = reader.result()
                    result["answers"] = [base64.b64encode(answer).decode()]
                    result["latencies"] = [round(time.monotonic() - begin, 6)]
        except OSError as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
            while self.events.get() is not None:   # drain: the feeder never blocks
                pass
        result["end"] = self.end
        self.report(result)


def run(target: tuple[str, int], out_path: str, events, linger: float = 30.0) -> dict:
    """Replay the sessions of the event lines ``events``; results to ``out_path``."""
    lock = threading.Lock()
    sessions: dict[str, LiveSession] = {}
    started: list[threading.Thread] = []
    counts = {"sessions": 0, "errors": 0}
    headers: tuple = ()
    key = b""
    with open(out_path, "w") as out:
        def report(result: dict) -> None:
            with lock:
                counts["errors"] += bool(result["error"])
                out.write(json.dumps(result) + "\n")
                out.flush()

        for line in events:
            event = json.loads(line)
            if "config" in event:
                headers = tuple(event["config"].get("headers", ()))
                key = bytes.fromhex(event["config"].get("key", ""))
                continue
            session = sessions.get(event["s"])
            if "d" in event:
                if session is None:
                    session = sessions[event["s"]] = LiveSession(event["s"], target, report,
                                                                 headers, key)
                    started.append(session.thread)
                    counts["sessions"] += 1
                session.events.put(base64.b64decode(event["d"]))
            elif session is not None:               # "end": a session without bytes is
                session.end = event["end"]          # never opened
                session.events.put(None)
                del sessions[event["s"]]
        for session in sessions.values():          # the capture stopped first
            session.events.put(None)
        deadline = time.monotonic() + linger
        for thread in started:              # every session's, ended earlier or just now
            thread.join(max(0.0, deadline - time.monotonic()))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dcnet.mirror.live_worker")
    parser.add_argument("--target", required=True, help="IP:PORT or [IPv6]:PORT")
    parser.add_argument("--out", required=True)
    parser.add_argument("--linger", type=float, default=30.0,
                        help="Seconds open sessions may take to finish after stdin ends.")
    args = parser.parse_args(argv)
    counts = run(split_address(args.target), args.out, sys.stdin, args.linger)
    print(json.dumps(counts), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
