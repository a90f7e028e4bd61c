"""Unit tests of live replay's pure parts: the incremental HTTP request cutter, the
per-session copy choice, IPv6 segment parsing and the IPv6 nft text."""

from __future__ import annotations

import socket
import struct

from dcnet.mirror import recorder, replay, rules
from dcnet.mirror.live_worker import next_request

GET = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"


def test_next_request_cuts_complete_requests_and_waits_for_the_rest():
    assert next_request(GET + POST[:10]) == (GET, POST[:10], True)
    assert next_request(POST[:10]) == (None, POST[:10], True)
    assert next_request(POST[:-1]) == (None, POST[:-1], True)       # body incomplete
    assert next_request(POST + GET) == (POST, GET, True)
    assert next_request(b"GET /a HT") == (None, b"GET /a HT", True)


def test_next_request_gives_up_on_what_is_not_http():
    assert next_request(b"\x00\x01binary\r\n")[2] is False
    chunked = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert next_request(chunked)[2] is False
    assert next_request(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n")[2] is False
    assert next_request(b"x" * (70 << 10))[2] is False      # no line end in 64 KiB


def test_copies_of_matches_the_file_replay_plan():
    ids = [f"s{i}" for i in range(200)]
    assert replay.copies_of("s1", 3.0) == [0, 1, 2]
    chosen = [i for i in ids if replay.copies_of(i, 0.25) == [0]]
    assert 20 < len(chosen) < 80 and all(replay.copies_of(i, 0.25) == [] for i in ids
                                         if i not in chosen)
    sessions = [type("S", (), {"id": i})() for i in ids]
    plan = replay.plan_copies(sessions, 2.5)
    assert [len(c) for c in plan[:2]] == [200, 200]
    assert [s.id for s in plan[2]] == [i for i in ids if replay.copies_of(i, 2.5) == [0, 1, 2]]


def test_ipv6_segments_are_parsed_and_addresses_bracketed():
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 7, 0, 5 << 4, 0x18, 1000, 0, 0) + b"hi"
    header = struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64)
    packet = header + socket.inet_pton(socket.AF_INET6, "fd00::1") + \
        socket.inet_pton(socket.AF_INET6, "2001:db8::10") + tcp
    segment = recorder.parse_ip_tcp(packet)
    assert (segment.src, segment.sport, segment.dst, segment.dport, segment.seq) == \
        ("fd00::1", 40000, "2001:db8::10", 80, 7)
    assert (segment.payload, segment.flags) == (b"hi", 0x18)
    assert recorder.parse_ip_tcp(packet[:-3]) is None                  # truncated
    assert recorder.join_address("fd00::1", 80) == "[fd00::1]:80"
    assert rules.split_address("[fd00::1]:80") == ("fd00::1", 80)


def test_ipv6_vips_get_an_ip6_table_and_need_an_ipv6_mirror_address():
    spec = rules.MirrorSpec((("10.0.1.2", 80), ("2001:db8::10", 80)), "10.9.0.2", "mir0",
                            10, "fd09::2")
    text = rules.ruleset(spec)
    assert "table ip6 dcnet_mirror {" in text
    assert "ip6 daddr 2001:db8::10 tcp dport 80 jhash ip6 saddr . tcp sport mod 100" in text
    assert 'dup to fd09::2 device "mir0"' in text
    assert "ip daddr 10.0.1.2 tcp dport 80" in text
    v4_only = rules.ruleset(rules.MirrorSpec((("10.0.1.2", 80),), "10.9.0.2", "mir0"))
    assert "table ip6 dcnet_mirror {" not in v4_only
    assert "delete table ip6 dcnet_mirror" in v4_only      # a previous one goes
    for bad in [(("2001:db8::10", 80),), "10.9.0.2", "mir0"], \
               [(("10.0.1.2", 80),), None, "mir0", 100, "fd09::2"]:
        try:
            rules.MirrorSpec(*bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")
