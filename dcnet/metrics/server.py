"""The HTTP exposition endpoint of a dcnet daemon (``/metrics``), optionally inside a
network namespace.

The listening socket is created by :func:`dcnet.sysio.netns.socket_in` when a namespace
path is given (the one place that switches namespaces) and then served by a
``ThreadingHTTPServer`` thread in the caller's namespace: a socket keeps the namespace it
was created in. A plain registry is served by ``prometheus_client``'s own handler (text
format, OpenMetrics on request, gzip, ``?name[]=`` filtering); an
:class:`dcnet.metrics.exposition.Exposition` (the ELB collector's directly written text plus
a registry) by :class:`ExpositionHandler` (text format 0.0.4, gzip on request; the body
is written family by family as it is encoded, never joined, so without Content-Length:
HTTP/1.0 ends it by closing; glibc's heap is trimmed after each answer, see
:mod:`dcnet.metrics.isolated`). That handler reads the request itself, on
``socketserver``: ``http.server`` (imported only for ``prometheus_client``'s handler)
brings ``http.client``, ``ssl`` and ``email``, 2 MiB of an exporter's 50.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import zlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from dcnet.metrics import isolated
from dcnet.metrics.exposition import CONTENT_TYPE, Exposition

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


def parse_address(text: str, default_port: int = 9108) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` (all IPv4 addresses) or ``HOST``."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    elif ":" in text:
        host, port = text, ""          # a bare IPv6 address
    else:
        host, port = text, ""
    try:
        number = int(port) if port else default_port
    except ValueError:
        raise ValueError(f"bad metrics address {text!r}: port {port!r}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"bad metrics address {text!r}: port out of range")
    return host or "0.0.0.0", number


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True

    def __init__(self, sock: socket.socket, handler):
        self.address_family = sock.family
        super().__init__(sock.getsockname()[:2], handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_address = sock.getsockname()[:2]

    def server_bind(self) -> None:       # the socket is bound already
        pass

    def handle_error(self, request, client_address) -> None:   # a scraper hung up: quiet
        pass


def gzip_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """``chunks`` gzip-compressed as one stream (level 1), piece by piece."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)     # 31: a gzip header
    for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()


class ExpositionHandler(socketserver.StreamRequestHandler):
    """``GET /metrics`` (or ``/``) answers the exposition's body; gzip when accepted.
    One HTTP/1.0 answer a connection; other paths 404, other methods 501, a request
    line or header of over 64 KiB (or over 100 headers) 400."""

    exposition: Exposition
    timeout = 60.0          # a client silent that long is dropped (its thread ends)

    def handle(self) -> None:
        # a client that went away or stalled: nothing to answer, nothing to log
        with contextlib.suppress(TimeoutError, ConnectionError):
            self._handle()

    def _handle(self) -> None:
        request = self.rfile.readline(65537).decode("latin-1").split()
        headers: dict[str, str] = {}
        for _ in range(101):
            line = self.rfile.readline(65537)
            if line in (b"\r\n", b"\n", b"") or len(line) > 65536 or len(headers) == 100:
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if len(request) != 3 or line not in (b"\r\n", b"\n"):
            self.answer(400, "Bad Request")
        elif request[0] != "GET":
            self.answer(501, "Not Implemented")
        elif request[1].split("?", 1)[0] not in ("/", "/metrics"):
            self.answer(404, "Not Found")
        else:
            self.get("gzip" in headers.get("accept-encoding", ""))

    def answer(self, code: int, reason: str, text: str = "",
               headers: tuple[tuple[str, str], ...] = ()) -> None:
        """The status line and headers (with ``text``: a plain-text body of it)."""
        body = f"{code} {reason}{': ' if text else ''}{text}\n".encode() if code >= 400 else b""
        head = [f"HTTP/1.0 {code} {reason}", *(f"{k}: {v}" for k, v in headers),
                "Connection: close"]
        if body:
            head += ["Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body)}"]
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    def get(self, gzip: bool) -> None:
        try:
            chunks = self.exposition.chunks()
        except Exception as exc:           # a collector bug: answer 500, keep serving
            self.answer(500, "Internal Server Error", str(exc).replace("\n", " "))
            return
        headers = (("Content-Type", CONTENT_TYPE),)
        if gzip:
            chunks = gzip_chunks(chunks)
            headers += (("Content-Encoding", "gzip"),)
        self.answer(200, "OK", headers=headers)   # HTTP/1.0: the body ends with the close
        for chunk in chunks:               # written as encoded: never joined
            self.wfile.write(chunk)
        del chunks
        isolated.trim()                    # the pieces' heap pages back to the kernel

    @classmethod
    def factory(cls, exposition: Exposition) -> type:
        return type("BoundExpositionHandler", (cls,), {"exposition": exposition})


class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it."""

    def __init__(self, registry: CollectorRegistry | Exposition, address: str = ":9108",
                 netns_path: str | None = None):
        host, port = parse_address(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        if netns_path is None:
            sock = socket.socket(family, socket.SOCK_STREAM)
        else:
            from dcnet.sysio import netns

            raw = netns.socket_in(netns_path, family, socket.SOCK_STREAM)
            sock = socket.socket(family, socket.SOCK_STREAM, fileno=raw.detach())
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        if isinstance(registry, Exposition):
            handler = ExpositionHandler.factory(registry)
        else:                  # prometheus_client's own handler (imported only for it)
            from prometheus_client.exposition import MetricsHandler

            handler = MetricsHandler.factory(registry)
        self.httpd = _Server(sock, handler)
        self.host, self.port = sock.getsockname()[:2]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics",
                                       daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve(registry: CollectorRegistry | Exposition, address: str, netns_path: str | None = None
          ) -> MetricsServer:
    """Start serving ``registry`` on ``address`` (in the namespace at ``netns_path``)."""
    return MetricsServer(registry, address, netns_path)
