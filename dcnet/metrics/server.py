"""The HTTP exposition endpoint of a dcnet daemon (``/metrics``), optionally inside a
network namespace.

The listening socket is created by :func:`dcnet.sysio.netns.socket_in` when a namespace
path is given (the one place that switches namespaces) and then served by a
``ThreadingHTTPServer`` thread in the caller's namespace: a socket keeps the namespace it
was created in. The handler is ``prometheus_client``'s own (text format, OpenMetrics on
request, gzip, ``?name[]=`` filtering).
"""

from __future__ import annotations

import socket
import threading
from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import MetricsHandler


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


class _Server(ThreadingHTTPServer):
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


class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it."""

    def __init__(self, registry: CollectorRegistry, address: str = ":9108",
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
        self.httpd = _Server(sock, MetricsHandler.factory(registry))
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


def serve(registry: CollectorRegistry, address: str, netns_path: str | None = None
          ) -> MetricsServer:
    """Start serving ``registry`` on ``address`` (in the namespace at ``netns_path``)."""
    return MetricsServer(registry, address, netns_path)
