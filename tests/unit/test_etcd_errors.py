"""How the etcd client classifies gRPC error answers: a member shutting down answers
through its gateway with transport messages under codes Unknown/Internal (captured from
etcd 3.4 on Debian 12 while a lab cluster stopped), which mean "unavailable", not
"the request failed"."""

import pytest

from dcnet.sysio.etcd.errors import _is_unavailable

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("code, message", [
    (14, 'connection error: desc = "transport: Error while dialing dial tcp 10.97.0.2:2379: '
         'connect: connection refused"'),
    (4, "context deadline exceeded"),
    (2, "OK: HTTP status code 200; transport: missing content-type field"),
    (13, "server closed the stream without sending trailers"),
    (1, "context canceled"),
    (2, "etcdserver: server stopped"),
])
def test_shutdown_answers_are_unavailable(code, message):
    assert _is_unavailable(code, message)


@pytest.mark.parametrize("code, message", [
    (3, "etcdserver: key is not provided"),
    (9, "etcdserver: requested lease not found"),
    (2, "etcdserver: duplicate key given in txn request"),
    (11, "etcdserver: mvcc: required revision is a future revision"),
    (13, "etcdserver: corrupt cluster"),
])
def test_request_failures_are_not_unavailable(code, message):
    assert not _is_unavailable(code, message)
