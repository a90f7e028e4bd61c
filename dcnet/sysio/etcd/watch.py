"""Watches: :meth:`Watcher.watch_prefix` yields (revision, events) from a start revision,
resumable after a disconnect from the last revision + 1, raising EtcdCompacted when the
start was compacted; ``_WatchStream`` is one streaming POST /v3/watch read with our own
chunked decoding so that a stop flag is checked every second without losing data."""

from __future__ import annotations

import json
import threading
import time

from dcnet.sysio.etcd.codec import Event, _b64, _revision, prefix_range_end
from dcnet.sysio.etcd.errors import (
    EtcdCompacted,
    EtcdPermissionDenied,
    EtcdUnavailable,
    _is_unavailable,
    _ServerError,
    _Transport,
)
from dcnet.sysio.etcd.transport import Transport, _describe, _parse_reply, _split_endpoint

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

WATCH_POLL_SECONDS = 1.0


class Watcher(Transport):
    """The watch half of :class:`dcnet.sysio.etcd.Client`."""

    def watch_prefix(self, prefix: str, start_revision: int,
                     stop: threading.Event | None = None
                     ) -> Iterator[tuple[int, list[Event]]]:
        """Yield (revision, events) per revision from start_revision on (see module doc).

        Raises EtcdCompacted when start_revision was compacted, EtcdUnavailable when the
        stream breaks (resume from the last yielded revision + 1); returns when ``stop``
        is set (checked at least every second).
        """
        full = self._full(prefix)
        request = {"create_request": {"key": _b64(full),
                                      "range_end": _b64(prefix_range_end(full)),
                                      "start_revision": str(max(0, start_revision)),
                                      "progress_notify": True}}
        op = f"watch {prefix} from {start_revision}"
        for attempt in (1, 2):
            stream = self._open_watch(request, op)
            delivered = False
            try:
                for item in self._watch_events(stream, stop):
                    delivered = True
                    yield item
                return
            except EtcdUnavailable:
                # a token that died with a restarted member is only refused once the
                # stream runs; _watch_events forgot it, so log in again and retry once
                if delivered or attempt == 2 or not self.settings.user or self._token:
                    raise
            finally:
                stream.close()

    def _open_watch(self, request: dict, op: str) -> _WatchStream:
        reauthenticated = False
        while True:
            failures: list[str] = []
            for endpoint in self._endpoint_order():
                stream = _WatchStream(self, endpoint, op)
                try:
                    stream.start(request, self._auth_header())
                except _Transport as exc:
                    stream.close()
                    failures.append(f"{endpoint}: {exc}")
                    continue
                except _ServerError as exc:
                    stream.close()
                    if _is_unavailable(exc.code, exc.message):
                        failures.append(f"{endpoint}: {exc.message}")
                        continue
                    if self._should_reauthenticate(exc, reauthenticated):
                        reauthenticated = True
                        break
                    raise self._error(exc, op) from None
                except BaseException:
                    stream.close()
                    raise
                if stream.permission_denied and self.settings.user and not reauthenticated:
                    stream.close()
                    self._token = None
                    reauthenticated = True
                    break
                if stream.permission_denied:
                    stream.close()
                    raise EtcdPermissionDenied(f"etcd {endpoint} {op}: permission denied")
                self._set_active(endpoint)
                return stream
            else:
                raise EtcdUnavailable(f"etcd {op}: no endpoint answered: "
                                      + "; ".join(failures))

    def _watch_events(self, stream: _WatchStream, stop: threading.Event | None
                      ) -> Iterator[tuple[int, list[Event]]]:
        while True:
            message = stream.next_message(stop)
            if message is None:
                return
            if "error" in message:
                error = message["error"]
                text = error.get("message", str(error)) if isinstance(error, dict) else error
                if "invalid auth token" in str(text):
                    # simple tokens die with the member that issued them (e.g. a restart):
                    # forget it so the caller's next watch logs in again
                    self._token = None
                raise EtcdUnavailable(f"etcd {stream.endpoint} {stream.op}: stream ended: "
                                      f"{text}")
            result = message.get("result", {})
            if result.get("canceled"):
                compacted = int(result.get("compact_revision", 0))
                if compacted:
                    raise EtcdCompacted(f"etcd {stream.endpoint} {stream.op}: revision "
                                        f"compacted (oldest kept: {compacted})", compacted)
                reason = result.get("cancel_reason", "canceled by the server")
                if "invalid auth token" in reason:
                    self._token = None
                if "permission denied" in reason:
                    raise EtcdPermissionDenied(f"etcd {stream.endpoint} {stream.op}: {reason}")
                raise EtcdUnavailable(f"etcd {stream.endpoint} {stream.op}: {reason}")
            events = result.get("events") or []
            if not events:
                if not result.get("created") and "revision" in result.get("header", {}):
                    yield _revision(result), []  # progress notification
                continue
            group: list[Event] = []
            for raw in events:
                event = Event("delete" if raw.get("type") == "DELETE" else "put",
                              self._kv(raw.get("kv", {})))
                if group and event.kv.mod_revision != group[-1].kv.mod_revision:
                    yield group[-1].kv.mod_revision, group
                    group = []
                group.append(event)
            yield group[-1].kv.mod_revision, group


class _WatchStream:
    """One streaming POST /v3/watch: our own HTTP/1.1 + chunked decoding on a raw socket,
    so reads can time out every second (to check ``stop``) without losing data."""

    def __init__(self, client: Transport, endpoint: str, op: str):
        self.client = client
        self.endpoint = endpoint
        self.op = op
        self.sock: Any = None
        self.buffer = b""
        self.lines = b""
        self.chunk_left = 0
        self.crlf_left = 0
        self.done = False
        self.permission_denied = False
        self.pending: list[dict] = []

    def start(self, request: dict, headers: dict[str, str]) -> None:
        _, host, port = _split_endpoint(self.endpoint)
        body = json.dumps(request).encode()
        head = ["POST /v3/watch HTTP/1.1", f"Host: {host}:{port}",
                "Content-Type: application/json", f"Content-Length: {len(body)}",
                "Grpc-Metadata-hasleader: true"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        self.sock = self.client._open_socket(self.endpoint)
        try:
            self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            status, chunked, length = self._read_head()
        except OSError as exc:
            raise _Transport(self.endpoint, _describe(exc), True) from None
        if not chunked:
            data = self._read_exact(length) if length else b""
            _parse_reply(self.endpoint, status, data)
            raise _Transport(self.endpoint, f"HTTP {status}: watch stream not started", True)
        # The first message tells whether the watch was created (or refused).
        first = self._next_raw(None, deadline=time.monotonic() + self.client.settings.timeout)
        if first is None:
            raise _Transport(self.endpoint, "stream closed before the watch was created", True)
        if "error" in first:
            error = first["error"]
            if isinstance(error, dict):
                raise _ServerError(self.endpoint, int(error.get("grpc_code", 2)),
                                   str(error.get("message", error)))
            raise _ServerError(self.endpoint, int(first.get("code", 2)),
                               str(first.get("message") or error))
        result = first.get("result", {})
        if result.get("canceled") and "permission denied" in result.get("cancel_reason", ""):
            self.permission_denied = True
        self.pending.append(first)

    def next_message(self, stop: threading.Event | None) -> dict | None:
        if self.pending:
            return self.pending.pop(0)
        try:
            return self._next_raw(stop)
        except _Transport as exc:
            raise EtcdUnavailable(f"etcd {self.endpoint} {self.op}: stream broken: {exc}"
                                  ) from None
        except OSError as exc:
            raise EtcdUnavailable(f"etcd {self.endpoint} {self.op}: stream broken: "
                                  f"{_describe(exc)}") from None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    # ---- raw reading

    def _recv(self, stop: threading.Event | None, deadline: float | None = None) -> bool:
        """Append more bytes to the buffer; False when ``stop`` got set meanwhile."""
        self.sock.settimeout(WATCH_POLL_SECONDS)
        while True:
            if stop is not None and stop.is_set():
                return False
            if deadline is not None and time.monotonic() > deadline:
                raise _Transport(self.endpoint, "timed out waiting for the watch", True)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise _Transport(self.endpoint, "connection closed by the server", True)
            self.buffer += data
            return True

    def _read_head(self) -> tuple[int, bool, int]:
        while b"\r\n\r\n" not in self.buffer:
            self._recv(None, time.monotonic() + self.client.settings.timeout)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            raise _Transport(self.endpoint, f"bad HTTP status line {lines[0]!r}", True) from None
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        chunked = "chunked" in fields.get("transfer-encoding", "").lower()
        return status, chunked, int(fields.get("content-length", 0) or 0)

    def _read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._recv(None, time.monotonic() + self.client.settings.timeout)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def _next_raw(self, stop: threading.Event | None,
                  deadline: float | None = None) -> dict | None:
        """The next newline-delimited JSON message of the chunked body; None on stop."""
        while b"\n" not in self.lines:
            if self.done:
                raise _Transport(self.endpoint, "stream ended by the server (the member "
                                 "stopped or lost its leader)", True)
            if not self._fill_lines(stop, deadline):
                return None
        line, self.lines = self.lines.split(b"\n", 1)
        if not line.strip():
            return self._next_raw(stop, deadline)
        try:
            return json.loads(line)
        except ValueError:
            raise _Transport(self.endpoint, f"bad stream message {line[:200]!r}", True) from None

    def _fill_lines(self, stop: threading.Event | None, deadline: float | None) -> bool:
        """Move the next piece of chunk payload from buffer to lines."""
        if self.chunk_left == 0 and self.crlf_left == 0:
            while b"\r\n" not in self.buffer:
                if not self._recv(stop, deadline):
                    return False
            size_line, self.buffer = self.buffer.split(b"\r\n", 1)
            try:
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
            except ValueError:
                raise _Transport(self.endpoint, f"bad chunk size {size_line[:50]!r}",
                                 True) from None
            if size == 0:
                self.done = True
                return True
            self.chunk_left, self.crlf_left = size, 2
        while not self.buffer:
            if not self._recv(stop, deadline):
                return False
        if self.chunk_left:
            piece = self.buffer[:self.chunk_left]
            self.buffer = self.buffer[len(piece):]
            self.chunk_left -= len(piece)
            self.lines += piece
        else:
            dropped = min(self.crlf_left, len(self.buffer))
            self.buffer = self.buffer[dropped:]
            self.crlf_left -= dropped
        return True
