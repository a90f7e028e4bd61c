"""Unit tests of answer diffing: fields, endpoints, noise from primary vs secondary."""

from __future__ import annotations

import pytest

from dcnet.mirror.diff import compare, endpoint_of, fields_of

pytestmark = pytest.mark.unit


def answer(body: bytes, status: str = "200 OK", **headers: str) -> bytes:
    head = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


def req(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def test_fields_and_endpoints():
    f = fields_of(answer(b"hi", Date="now", X_Id="1"))
    assert f == {"status": "200", "body": b"hi", "header:x-id": "1"}
    assert endpoint_of(req("/users/42/orders?page=3")) == "GET /users/N/orders"


def test_real_differences_are_reported_and_noise_is_not():
    same = answer(b"ok")
    rows = [
        (req("/a/1"), same, same, same),
        (req("/a/2"), answer(b"new"), same, same),                      # real
        (req("/b/1"), answer(b"ok", X_Req="c"), answer(b"ok", X_Req="p"),
         answer(b"ok", X_Req="s")),                                    # noise: x-req
        (req("/b/2"), answer(b"ok", X_Req="c"), answer(b"ok", X_Req="p"),
         answer(b"ok", X_Req="p")),      # same field, noisy for the endpoint: not real
        (req("/c/1"), answer(b"ok", "500 Oops"), same, same),          # real: status
    ]
    reports = compare(rows)
    assert reports["GET /a/N"].differences == 1 and reports["GET /a/N"].fields == {"body"}
    assert reports["GET /a/N"].examples[0]["request"] == "GET /a/2 HTTP/1.1"
    assert reports["GET /b/N"].differences == 0
    assert reports["GET /b/N"].noise_fields == {"header:x-req"}
    assert reports["GET /c/N"].fields == {"status"}
    assert sum(r.requests for r in reports.values()) == 5
