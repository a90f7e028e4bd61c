"""The etcd client's transport: HTTP/1.1 POSTs of JSON to the gateway over pooled
keep-alive connections, TLS (server verification, client certificates), sockets opened
in a chosen network namespace, failover between endpoints (retrying only what is safe to
retry), token authentication and re-authentication, and mapping failures to
:mod:`dcnet.sysio.etcd.errors`. http.client, ssl and socket are imported only when a
client connects."""

from __future__ import annotations

import json
import threading

from dcnet.sysio.etcd.codec import KeyCodec
from dcnet.sysio.etcd.errors import (
    EtcdError,
    EtcdPermissionDenied,
    EtcdUnavailable,
    _is_auth_failure,
    _is_unavailable,
    _ServerError,
    _Transport,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Self

    from dcnet.sysio.etcd.url import Settings

STALE_CHECK_SECONDS = 0.0


class Transport(KeyCodec):
    """Endpoints, connections, TLS and auth of one client; :class:`Client` builds on it.

    ``netns``: optional path of a network namespace in which TCP connections are opened.
    """

    def __init__(self, settings: Settings, netns: str | None = None):
        if not settings.endpoints:
            raise ValueError("etcd settings: no endpoints")
        self.settings = settings
        self.netns = netns
        self._prefix = settings.prefix.encode()
        self._active = 0
        self._idle: dict[str, list[Any]] = {}
        self._lock = threading.Lock()
        self._auth_lock = threading.Lock()
        self._token: str | None = None
        self._ssl_context: Any = None
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    # ------------------------------------------------------------ requests

    def _endpoint_order(self) -> list[str]:
        endpoints = self.settings.endpoints
        start = self._active % len(endpoints)
        return list(endpoints[start:] + endpoints[:start])

    def _set_active(self, endpoint: str) -> None:
        self._active = self.settings.endpoints.index(endpoint)

    def _auth_header(self) -> dict[str, str]:
        if not self.settings.user:
            return {}
        token = self._token
        if token is None:
            with self._auth_lock:
                if self._token is None:
                    reply = self._call("/v3/auth/authenticate",
                                       {"name": self.settings.user,
                                        "password": self.settings.password or ""},
                                       f"authenticate {self.settings.user}", auth=False)
                    self._token = reply.get("token")
                    if not self._token:
                        raise EtcdPermissionDenied(
                            f"etcd authenticate {self.settings.user}: no token returned "
                            f"(is auth enabled?)")
                token = self._token
        return {"Authorization": token}

    def _should_reauthenticate(self, exc: _ServerError, already: bool) -> bool:
        if already or not self.settings.user or "invalid auth token" not in exc.message:
            return False
        self._token = None
        return True

    def _error(self, exc: _ServerError, op: str) -> EtcdError:
        text = f"etcd {exc.endpoint} {op}: {exc.message}"
        if _is_auth_failure(exc.code, exc.message):
            return EtcdPermissionDenied(text)
        if _is_unavailable(exc.code, exc.message):
            return EtcdUnavailable(text)
        return EtcdError(text)

    def _call(self, path: str, body: dict, op: str, idempotent: bool = True,
              auth: bool = True, with_endpoint: bool = False) -> Any:
        """POST body to path on the first endpoint that answers; the decoded reply."""
        if self._closed:
            raise EtcdError(f"etcd {op}: client is closed")
        payload = json.dumps(body).encode()
        reauthenticated = False
        while True:
            headers = self._auth_header() if auth else {}
            failures: list[str] = []
            for endpoint in self._endpoint_order():
                try:
                    reply = self._post(endpoint, path, payload, headers)
                except _Transport as exc:
                    if exc.sent and not idempotent:
                        raise EtcdUnavailable(f"etcd {endpoint} {op}: {exc} (outcome unknown)"
                                              ) from None
                    failures.append(f"{endpoint}: {exc}")
                    continue
                except _ServerError as exc:
                    if self._should_reauthenticate(exc, reauthenticated):
                        reauthenticated = True
                        break
                    if idempotent and _is_unavailable(exc.code, exc.message):
                        failures.append(f"{endpoint}: {exc.message}")
                        continue
                    raise self._error(exc, op) from None
                self._set_active(endpoint)
                return (reply, endpoint) if with_endpoint else reply
            else:
                raise EtcdUnavailable(f"etcd {op}: no endpoint answered: " + "; ".join(failures))

    def _post(self, endpoint: str, path: str, payload: bytes, headers: dict) -> Any:
        import http.client

        connection = self._take_connection(endpoint)
        sent = False
        try:
            connection.putrequest("POST", path, skip_accept_encoding=True)
            connection.putheader("Content-Type", "application/json")
            connection.putheader("Content-Length", str(len(payload)))
            for name, value in headers.items():
                connection.putheader(name, value)
            if connection.sock is None:
                connection.connect()
            sent = True
            connection.endheaders(payload)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise _Transport(endpoint, _describe(exc), sent) from None
        if response.will_close:
            connection.close()
        else:
            self._give_back(endpoint, connection)
        return _parse_reply(endpoint, response.status, data)

    def _take_connection(self, endpoint: str) -> Any:
        with self._lock:
            pool = self._idle.get(endpoint, [])
            while pool:
                connection = pool.pop()
                if _still_usable(connection):
                    return connection
                connection.close()
        return _new_connection(self, endpoint)

    def _give_back(self, endpoint: str, connection: Any) -> None:
        with self._lock:
            if self._closed:
                connection.close()
            else:
                self._idle.setdefault(endpoint, []).append(connection)

    # ------------------------------------------------------------ sockets

    def _open_socket(self, endpoint: str) -> Any:
        """A connected (and, for https, TLS-wrapped) socket to endpoint."""
        import socket

        scheme, host, port = _split_endpoint(endpoint)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise _Transport(endpoint, f"cannot resolve {host}: {exc}", False) from None
        last: Exception | None = None
        for family, kind, proto, _, address in infos:
            if self.netns:
                from dcnet.sysio import netns as netns_mod

                raw = netns_mod.socket_in(self.netns, family, kind, proto)
                sock = socket.socket(family, kind, proto, fileno=raw.detach())
            else:
                sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self.settings.timeout)
                sock.connect(address)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                _enable_keepalive(sock)
                if scheme == "https":
                    sock = self._tls_context().wrap_socket(sock, server_hostname=host)
                return sock
            except OSError as exc:
                sock.close()
                if _is_certificate_error(exc):
                    raise EtcdError(f"etcd {endpoint}: TLS verification of the server "
                                    f"failed: {exc}") from None
                last = exc
        raise _Transport(endpoint, _describe(last) if last else "no address", False)

    def _tls_context(self) -> Any:
        if self._ssl_context is None:
            import ssl

            context = ssl.create_default_context(cafile=self.settings.ca)
            if self.settings.cert:
                context.load_cert_chain(self.settings.cert, self.settings.key)
            self._ssl_context = context
        return self._ssl_context


# ---------------------------------------------------------------- connection plumbing


def _is_certificate_error(exc: BaseException) -> bool:
    import ssl

    return isinstance(exc, ssl.SSLCertVerificationError)


def _new_connection(client: Transport, endpoint: str) -> Any:
    import http.client

    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = client._open_socket(endpoint)

    _, host, port = _split_endpoint(endpoint)
    return Connection(host, port, timeout=client.settings.timeout)


def _split_endpoint(endpoint: str) -> tuple[str, str, int]:
    scheme, _, hostport = endpoint.partition("://")
    host, _, port = hostport.rpartition(":")
    return scheme, host.strip("[]"), int(port)


def _still_usable(connection: Any) -> bool:
    """False for an idle keep-alive connection the server has closed (or sent data on)."""
    import select

    sock = connection.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], STALE_CHECK_SECONDS)
    except (OSError, ValueError):
        return False
    return not readable


def _enable_keepalive(sock: Any) -> None:
    """Detect a silently dead peer on long watch streams within ~10 seconds."""
    import socket

    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 4), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def _parse_reply(endpoint: str, status: int, data: bytes) -> Any:
    try:
        reply = json.loads(data) if data else {}
    except ValueError:
        raise _Transport(endpoint, f"HTTP {status}: not JSON: {data[:200]!r}", True) from None
    if isinstance(reply, dict) and "error" in reply and "code" in reply:
        raise _ServerError(endpoint, int(reply["code"]), str(reply.get("message")
                                                            or reply["error"]))
    if status != 200:
        raise _Transport(endpoint, f"HTTP {status}: {data[:200]!r}", True)
    return reply
