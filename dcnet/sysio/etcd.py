"""The etcd v3 client of dcnet: a thin wrapper of etcd's HTTP/JSON gateway (/v3/...).

It owns parsing store URLs (``etcd://`` / ``etcds://``) into :class:`Settings` and the
:class:`Client`: keys and values, transactions (create / compare-and-swap), leases,
watches resumable from a revision, auth administration, failover between endpoints and
token re-authentication. Everything else in dcnet talks to etcd only through it.

Why our own wrapper and not ``etcd3gw``: etcd3gw (requests-based) talks to one endpoint
(no failover), reports a compacted watch start only as a silently ended stream, cannot
stop a watch on demand, and its sockets cannot be opened inside a chosen network
namespace (the test labs need that). The gateway protocol is small (POST JSON, base64
keys, newline-delimited streaming), so http.client + ssl do it with no dependency and a
cheap import: http.client, ssl and socket are imported only when a client connects.

Keys given to a Client are relative to ``Settings.prefix`` (plain concatenation:
"/dcnet" + "/nodes/a"); keys it returns have the prefix stripped again.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from dataclasses import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

DEFAULT_PORT = 2379
WATCH_POLL_SECONDS = 1.0
STALE_CHECK_SECONDS = 0.0
_PERM_TYPES = {"read": "READ", "write": "WRITE", "readwrite": "READWRITE"}
_GRPC_PERMISSION_DENIED = 7
_GRPC_UNAUTHENTICATED = 16
_GRPC_UNAVAILABLE = 14
_GRPC_DEADLINE_EXCEEDED = 4
_AUTH_FAILURE_TEXTS = ("authentication failed", "user name is empty", "permission denied",
                       "invalid auth token", "user name not found")


class EtcdError(RuntimeError):
    """Any etcd failure; the message names the endpoint and the operation."""


class EtcdUnavailable(EtcdError):
    """No endpoint answered (connection refused/reset, timeout, no leader)."""


class EtcdPermissionDenied(EtcdError):
    """Bad credentials, or the user lacks permission for the key."""


class EtcdCompacted(EtcdError):
    """A watch's start revision was compacted away; resync from a fresh read."""

    def __init__(self, message: str, compact_revision: int):
        super().__init__(message)
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class Event:
    kind: str  # "put" | "delete"
    kv: KeyValue


@dataclass(frozen=True)
class Settings:
    """Where and how to reach etcd (see :func:`parse_url`)."""

    endpoints: tuple[str, ...]
    prefix: str = ""
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 5.0


# ---------------------------------------------------------------- store URLs

_URL_OPTIONS = ("ca", "cert", "key", "user", "password-file", "timeout")


def parse_url(url: str) -> Settings:
    """Parse ``etcd[s]://HOST:PORT[,HOST:PORT...][/PREFIX][?OPTIONS]`` into Settings.

    Options: ca=PATH, cert=PATH, key=PATH, user=NAME, password-file=PATH,
    timeout=SECONDS. etcds:// (or ca=/cert= given) means https. Raises ValueError
    naming the bad part.
    """
    from urllib.parse import parse_qsl

    where = f"store URL {url!r}"
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("etcd", "etcds"):
        raise ValueError(f"{where}: scheme must be etcd:// or etcds://")
    rest, _, query = rest.partition("?")
    hostpart, slash, path = rest.partition("/")
    if not hostpart:
        raise ValueError(f"{where}: no HOST:PORT given")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"{where}: malformed query {query!r}") from None
    options: dict[str, str] = {}
    for name, value in pairs:
        if name not in _URL_OPTIONS:
            raise ValueError(f"{where}: unknown option {name!r} "
                             f"(known: {', '.join(_URL_OPTIONS)})")
        if name in options:
            raise ValueError(f"{where}: option {name!r} given twice")
        if not value:
            raise ValueError(f"{where}: option {name!r} is empty")
        options[name] = value
    secure = scheme == "etcds" or "ca" in options or "cert" in options
    endpoints = tuple(_parse_hostport(item, where, secure) for item in hostpart.split(","))
    prefix = ("/" + path).rstrip("/") if slash else ""
    for name in ("ca", "cert", "key"):
        if name in options and not os.path.isfile(options[name]):
            raise ValueError(f"{where}: {name} file {options[name]!r} not found")
    if ("cert" in options) != ("key" in options):
        raise ValueError(f"{where}: cert= and key= must be given together")
    password = None
    if "password-file" in options:
        if "user" not in options:
            raise ValueError(f"{where}: password-file= needs user=")
        password = _read_password(options["password-file"], where)
    elif "user" in options:
        raise ValueError(f"{where}: user= needs password-file=")
    timeout = 5.0
    if "timeout" in options:
        try:
            timeout = float(options["timeout"])
        except ValueError:
            timeout = -1.0
        if not 0 < timeout < 3600:
            raise ValueError(f"{where}: timeout {options['timeout']!r} is not a number of "
                             f"seconds in (0, 3600)")
    return Settings(endpoints=endpoints, prefix=prefix, ca=options.get("ca"),
                    cert=options.get("cert"), key=options.get("key"),
                    user=options.get("user"), password=password, timeout=timeout)


def _parse_hostport(item: str, where: str, secure: bool) -> str:
    if not item:
        raise ValueError(f"{where}: empty HOST:PORT in the host list")
    if item.startswith("["):
        host, bracket, port_text = item[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise ValueError(f"{where}: bad IPv6 HOST:PORT {item!r}")
        port_text = port_text[1:]
        host_text = f"[{host}]"
    else:
        host, _, port_text = item.partition(":")
        host_text = host
    if not host or any(c in host for c in "@/ "):
        raise ValueError(f"{where}: bad host in {item!r}")
    port = DEFAULT_PORT
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{where}: bad port {port_text!r} in {item!r}")
        port = int(port_text)
    return f"{'https' if secure else 'http'}://{host_text}:{port}"


def _read_password(path: str, where: str) -> str:
    try:
        with open(path) as handle:
            password = handle.read().rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"{where}: cannot read password-file {path!r}: "
                         f"{exc.strerror}") from None
    if not password:
        raise ValueError(f"{where}: password-file {path!r} is empty")
    return password


# ---------------------------------------------------------------- encoding helpers


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def prefix_range_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"
    return stripped[:-1] + bytes([stripped[-1] + 1])


class _Transport(Exception):
    """Internal: a connection-level failure; ``sent`` tells if the request went out."""

    def __init__(self, endpoint: str, detail: str, sent: bool):
        super().__init__(detail)
        self.endpoint = endpoint
        self.sent = sent


class _ServerError(Exception):
    """Internal: etcd answered with a gRPC error."""

    def __init__(self, endpoint: str, code: int, message: str):
        super().__init__(message)
        self.endpoint = endpoint
        self.code = code
        self.message = message


def _is_auth_failure(code: int, message: str) -> bool:
    if code in (_GRPC_PERMISSION_DENIED, _GRPC_UNAUTHENTICATED):
        return True
    return any(text in message for text in _AUTH_FAILURE_TEXTS)


# ---------------------------------------------------------------- the client


class Client:
    """An etcd v3 client over the JSON gateway; thread-safe; see the module docstring.

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

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ keys and values

    def get(self, key: str) -> KeyValue | None:
        reply = self._call("/v3/kv/range", {"key": self._key(key)}, "get " + key)
        kvs = reply.get("kvs") or []
        return self._kv(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        full = self._full(prefix)
        reply = self._call("/v3/kv/range", {"key": _b64(full),
                                            "range_end": _b64(prefix_range_end(full))},
                           "get_prefix " + prefix)
        return [self._kv(kv) for kv in reply.get("kvs") or []], _revision(reply)

    def put(self, key: str, value: bytes | str, lease: int = 0) -> int:
        body = {"key": self._key(key), "value": _b64(_as_bytes(value))}
        if lease:
            body["lease"] = str(lease)
        return _revision(self._call("/v3/kv/put", body, "put " + key, idempotent=False))

    def delete(self, key: str) -> bool:
        reply = self._call("/v3/kv/deleterange", {"key": self._key(key)}, "delete " + key,
                           idempotent=False)
        return int(reply.get("deleted", 0)) > 0

    def delete_prefix(self, prefix: str) -> int:
        full = self._full(prefix)
        reply = self._call("/v3/kv/deleterange",
                           {"key": _b64(full), "range_end": _b64(prefix_range_end(full))},
                           "delete_prefix " + prefix, idempotent=False)
        return int(reply.get("deleted", 0))

    def create(self, key: str, value: bytes | str, lease: int = 0) -> bool:
        """Put only if the key does not exist; True when this call created it."""
        return self.replace(key, value, 0, lease)

    def replace(self, key: str, value: bytes | str, mod_revision: int,
                lease: int = 0) -> bool:
        """Put only if the key's mod_revision is ``mod_revision`` (0: must not exist)."""
        put: dict[str, Any] = {"key": key, "value": _as_bytes(value)}
        if lease:
            put["lease"] = str(lease)
        succeeded, _, _ = self.txn([_revision_compare(key, mod_revision)],
                                   [{"request_put": put}], [], _op=f"replace {key}")
        return succeeded

    def delete_if(self, key: str, mod_revision: int) -> bool:
        """Delete only if the key's mod_revision is ``mod_revision``."""
        succeeded, _, _ = self.txn([_revision_compare(key, mod_revision)],
                                   [{"request_delete_range": {"key": key}}], [],
                                   _op=f"delete_if {key}")
        return succeeded

    def txn(self, compare: list[dict], success: list[dict], failure: list[dict],
            _op: str = "txn") -> tuple[bool, list[dict], int]:
        """A raw transaction with plain str keys/values; returns (succeeded, responses,
        revision). In the responses kvs/prev_kv have key -> str and value -> bytes."""
        body = {"compare": [self._encode(item) for item in compare],
                "success": [self._encode(item) for item in success],
                "failure": [self._encode(item) for item in failure]}
        reply = self._call("/v3/kv/txn", body, _op, idempotent=False)
        responses = [self._decode(item) for item in reply.get("responses") or []]
        return bool(reply.get("succeeded")), responses, _revision(reply)

    # ------------------------------------------------------------ leases

    def lease_grant(self, ttl: int) -> int:
        reply = self._call("/v3/lease/grant", {"TTL": str(int(ttl))}, f"lease_grant {ttl}",
                           idempotent=False)
        if reply.get("error"):
            raise EtcdError(f"etcd lease_grant {ttl}: {reply['error']}")
        return int(reply["ID"])

    def lease_keepalive(self, lease_id: int) -> int:
        """Renew the lease once; the remaining TTL in seconds, 0 when it is gone."""
        reply = self._call("/v3/lease/keepalive", {"ID": str(lease_id)},
                           f"lease_keepalive {lease_id:x}")
        result = reply.get("result", reply)
        return int(result.get("TTL", 0))

    def lease_revoke(self, lease_id: int) -> None:
        """Revoke the lease (its keys are deleted); a lease already gone is fine."""
        try:
            self._call("/v3/lease/revoke", {"ID": str(lease_id)},
                       f"lease_revoke {lease_id:x}")
        except EtcdError as exc:
            if "lease not found" not in str(exc):
                raise

    # ------------------------------------------------------------ watch

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
                    if exc.code == _GRPC_UNAVAILABLE:
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

    # ------------------------------------------------------------ maintenance

    def compact(self, revision: int) -> None:
        self._call("/v3/kv/compaction", {"revision": str(revision), "physical": True},
                   f"compact {revision}")

    def status(self) -> dict:
        """Status of the member answering: member_id, leader, revision, raft_term,
        version, endpoint."""
        reply, endpoint = self._call("/v3/maintenance/status", {}, "status",
                                     with_endpoint=True)
        header = reply.get("header", {})
        return {"member_id": int(header.get("member_id", 0)),
                "leader": int(reply.get("leader", 0)),
                "revision": int(header.get("revision", 0)),
                "raft_term": int(reply.get("raftTerm", 0)),
                "version": reply.get("version", ""),
                "endpoint": endpoint}

    # ------------------------------------------------------------ auth administration

    def user_add(self, name: str, password: str) -> None:
        self._call("/v3/auth/user/add", {"name": name, "password": password},
                   f"user_add {name}", idempotent=False)

    def role_add(self, name: str) -> None:
        self._call("/v3/auth/role/add", {"name": name}, f"role_add {name}", idempotent=False)

    def role_grant_prefix(self, role: str, prefix: str, perm: str) -> None:
        """Grant ``role`` perm ("read" | "write" | "readwrite") on keys under prefix."""
        if perm not in _PERM_TYPES:
            raise ValueError(f"role_grant_prefix: perm {perm!r} is not one of "
                             f"{', '.join(_PERM_TYPES)}")
        full = self._full(prefix)
        self._call("/v3/auth/role/grant",
                   {"name": role, "perm": {"key": _b64(full),
                                           "range_end": _b64(prefix_range_end(full)),
                                           "permType": _PERM_TYPES[perm]}},
                   f"role_grant_prefix {role} {prefix} {perm}", idempotent=False)

    def user_grant_role(self, user: str, role: str) -> None:
        self._call("/v3/auth/user/grant", {"user": user, "role": role},
                   f"user_grant_role {user} {role}", idempotent=False)

    def auth_enable(self) -> None:
        self._call("/v3/auth/enable", {}, "auth_enable", idempotent=False)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    # ------------------------------------------------------------ key helpers

    def _full(self, key: str) -> bytes:
        return self._prefix + key.encode()

    def _key(self, key: str) -> str:
        return _b64(self._full(key))

    def _strip(self, raw: bytes) -> str:
        if self._prefix and raw.startswith(self._prefix):
            raw = raw[len(self._prefix):]
        return raw.decode(errors="surrogateescape")

    def _kv(self, raw: dict) -> KeyValue:
        return KeyValue(key=self._strip(_unb64(raw.get("key"))), value=_unb64(raw.get("value")),
                        create_revision=int(raw.get("create_revision", 0)),
                        mod_revision=int(raw.get("mod_revision", 0)),
                        version=int(raw.get("version", 0)), lease=int(raw.get("lease", 0)))

    def _encode(self, item: Any, parent: str = "") -> Any:
        """Base64 key/range_end (with the prefix) and value fields of a txn dict."""
        if isinstance(item, dict):
            out = {}
            for name, value in item.items():
                if name in ("key", "range_end") and isinstance(value, str | bytes):
                    out[name] = _b64(self._full(value) if isinstance(value, str)
                                     else self._prefix + value)
                elif name == "value" and isinstance(value, str | bytes):
                    out[name] = _b64(value)
                else:
                    out[name] = self._encode(value, name)
            return out
        if isinstance(item, list):
            return [self._encode(value, parent) for value in item]
        return item

    def _decode(self, item: Any) -> Any:
        if isinstance(item, dict):
            out = {}
            for name, value in item.items():
                if name == "kvs" and isinstance(value, list):
                    out[name] = [self._decode_kv(kv) for kv in value]
                elif name == "prev_kv" and isinstance(value, dict):
                    out[name] = self._decode_kv(value)
                else:
                    out[name] = self._decode(value)
            return out
        if isinstance(item, list):
            return [self._decode(value) for value in item]
        return item

    def _decode_kv(self, raw: dict) -> dict:
        out = dict(raw)
        out["key"] = self._strip(_unb64(raw.get("key")))
        out["value"] = _unb64(raw.get("value"))
        return out

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
        if exc.code in (_GRPC_UNAVAILABLE, _GRPC_DEADLINE_EXCEEDED):
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
                    if exc.code == _GRPC_UNAVAILABLE and idempotent:
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


def _new_connection(client: Client, endpoint: str) -> Any:
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


def _revision(reply: dict) -> int:
    return int(reply.get("header", {}).get("revision", 0))


def _revision_compare(key: str, mod_revision: int) -> dict:
    if mod_revision == 0:
        return {"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
    return {"key": key, "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}


class _WatchStream:
    """One streaming POST /v3/watch: our own HTTP/1.1 + chunked decoding on a raw socket,
    so reads can time out every second (to check ``stop``) without losing data."""

    def __init__(self, client: Client, endpoint: str, op: str):
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
