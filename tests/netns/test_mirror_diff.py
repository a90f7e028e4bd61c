"""Netns test of answer diffing at a few hundred sessions (issue #19): against four
instances of the deterministic lab service in one namespace, an unchanged candidate gives
no difference at all, and a candidate changed on one endpoint is reported on that
endpoint only, for every request it got, with examples. The figures at 10,000 sessions
are bench/mirror_diff.py's."""

from __future__ import annotations

import sys

import pytest

from dcnet.lab.mirror_service import request_bytes
from dcnet.mirror import diff, recording

pytestmark = pytest.mark.netns

PY = sys.executable
SVC, CLIENT = "10.99.0.1", "10.99.0.2"
PRIMARY, SECONDARY, SAME, CHANGED = 8080, 8081, 8082, 8083
SESSIONS = 200


def topology(log_dir: str) -> dict:
    serve = [PY, "-m", "dcnet.lab.mirror_service", "--port"]
    return {
        "hosts": ["svc", "client"],
        "links": [{"a": {"host": "svc", "ifname": "eth0", "addresses": [f"{SVC}/24"]},
                   "b": {"host": "client", "ifname": "eth0", "addresses": [f"{CLIENT}/24"]}}],
        "processes": [
            {"name": name, "host": "svc", "ready_tcp_port": port,
             "argv": [*serve, str(port), "--log", f"{log_dir}/{name}.log", *variant]}
            for name, port, variant in (
                ("primary", PRIMARY, ()), ("secondary", SECONDARY, ()), ("same", SAME, ()),
                ("changed", CHANGED, ("--variant", "changed")))],
    }


def post(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {SVC}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


def sessions() -> list[recording.Session]:
    """Two requests a session over four endpoints; every 4th session hits /changed."""
    out = []
    for i in range(SESSIONS):
        second = (request_bytes(SVC, f"/item/{i}/changed") if i % 4 == 0
                  else post("/search", b'{"q": "%d"}' % i) if i % 4 == 1
                  else request_bytes(SVC, f"/user/{i}/profile"))
        payload = request_bytes(SVC, f"/item/{i}") + second
        out.append(recording.Session(f"d{i}", f"10.1.0.1:{20000 + i}", f"{SVC}:{PRIMARY}",
                                     0.0, chunks=(recording.Chunk(0, 0.0, payload),)))
    return out


@pytest.fixture
def services(lab_factory, tmp_path):
    return lab_factory(topology(str(tmp_path)))


def run(lab, candidate: int) -> dict:
    return lab.call("client", diff.run_diff, sessions(), (SVC, candidate), (SVC, PRIMARY),
                    (SVC, SECONDARY))


def test_an_unchanged_candidate_gives_no_difference(services):
    report = run(services, SAME)
    assert (report["requests"], report["failed_sessions"], report["skipped_sessions"]) == \
        (2 * SESSIONS, 0, 0)
    assert report["differences"] == 0
    assert sorted(report["endpoints"]) == ["GET /item/N", "GET /item/N/changed",
                                           "GET /user/N/profile", "POST /search"]
    assert all(e["noise_fields"] == [] for e in report["endpoints"].values())


def test_the_changed_endpoint_is_found_and_nothing_else(services):
    report = run(services, CHANGED)
    assert (report["requests"], report["failed_sessions"]) == (2 * SESSIONS, 0)
    changed = report["endpoints"]["GET /item/N/changed"]
    assert (changed["requests"], changed["differences"]) == (SESSIONS // 4, SESSIONS // 4)
    assert changed["fields"] == ["body"]
    assert report["differences"] == SESSIONS // 4       # no other endpoint differs
    example = changed["examples"][0]
    assert example["request"].startswith("GET /item/") and \
        example["request"].endswith("/changed HTTP/1.1")
    body = example["fields"]["body"]
    assert body["candidate"] != body["primary"]
    assert body["candidate"].split()[:2] == body["primary"].split()[:2]   # same request
