"""The etcd client's errors: the exceptions callers catch (:class:`EtcdError` and its
kinds) and the two internal failures the transport raises before a request's outcome is
mapped to them (a connection-level failure, a gRPC error answer)."""

from __future__ import annotations

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
