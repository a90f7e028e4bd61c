"""The etcd client's errors: the exceptions callers catch (:class:`EtcdError` and its
kinds) and the two internal failures the transport raises before a request's outcome is
mapped to them (a connection-level failure, a gRPC error answer)."""

from __future__ import annotations

_GRPC_CANCELLED = 1
_GRPC_UNKNOWN = 2
_GRPC_INTERNAL = 13
_GRPC_PERMISSION_DENIED = 7
_GRPC_UNAUTHENTICATED = 16
_GRPC_UNAVAILABLE = 14
_GRPC_DEADLINE_EXCEEDED = 4
# What etcd's gateway answers when its own gRPC connection to the server breaks (the
# member is shutting down): codes Unknown/Internal/Cancelled with a transport message.
# These say "this member cannot serve now", like Unavailable, not "the request is wrong".
_TRANSPORT_FAILURE_TEXTS = ("transport:", "server closed the stream", "error reading from server",
                            "the client connection is closing", "context canceled",
                            "etcdserver: server stopped", "raft: stopped")
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


def _is_unavailable(code: int, message: str) -> bool:
    """Whether a gRPC error answer means the member cannot serve now (try another one,
    or report the cluster unreachable) rather than that the request failed."""
    if code in (_GRPC_UNAVAILABLE, _GRPC_DEADLINE_EXCEEDED):
        return True
    return (code in (_GRPC_CANCELLED, _GRPC_UNKNOWN, _GRPC_INTERNAL)
            and any(text in message for text in _TRANSPORT_FAILURE_TEXTS))
