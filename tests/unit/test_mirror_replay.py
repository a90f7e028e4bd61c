"""Unit tests of the replay plan (copies per factor) and the HTTP/1.1 request splitter."""

from __future__ import annotations

import pytest

from dcnet.mirror import recording
from dcnet.mirror.replay import plan_copies, split_http

pytestmark = pytest.mark.unit

SESSIONS = [recording.Session(f"s{i}", "c:1", "v:80", 0.0) for i in range(1000)]


def test_whole_factors_copy_every_session():
    assert [len(c) for c in plan_copies(SESSIONS, 1)] == [1000]
    assert [len(c) for c in plan_copies(SESSIONS, 10)] == [1000] * 10
    assert len(plan_copies(SESSIONS, 100)) == 100


def test_fractions_choose_a_stable_share_by_session_id():
    tenth = plan_copies(SESSIONS, 0.1)
    assert len(tenth) == 1 and 60 < len(tenth[0]) < 140
    assert tenth == plan_copies(SESSIONS, 0.1)
    half = plan_copies(SESSIONS, 2.5)
    assert [len(c) for c in half[:2]] == [1000, 1000] and 400 < len(half[2]) < 600
    assert {s.id for s in tenth[0]} <= {s.id for s in half[2]}


@pytest.mark.parametrize("factor", [0.05, 0, 101])
def test_factor_out_of_range_is_refused(factor):
    with pytest.raises(ValueError, match="factor"):
        plan_copies(SESSIONS, factor)


def test_split_http_requests_with_and_without_bodies():
    a = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    b = b"POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
    assert split_http(a + b + a) == [a, b, a]
    assert split_http(a + b[:-1]) is None                       # truncated body
    assert split_http(b"\x16\x03\x01 not http\r\n\r\n") is None
    assert split_http(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") is None
