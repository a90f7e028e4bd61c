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


def _servers():
    """An HTTP server echoing each request's Cookie and path, and a raw sink answering
    ``got N`` at EOF, both on loopback; returns their ports and what they saw."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            seen.append((self.path, self.headers.get("Cookie")))
            body = self.path.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    sink = socket.create_server(("127.0.0.1", 0))

    def serve_sink():
        while True:
            try:
                conn, _ = sink.accept()
            except OSError:         # closed by the test
                return
            data = b""
            while more := conn.recv(65536):
                data += more
            seen.append(("raw", data))
            conn.sendall(b"got %d" % len(data))
            conn.close()
    threading.Thread(target=serve_sink, daemon=True).start()
    return http, sink, seen


def test_the_worker_cuts_http_requests_as_bytes_arrive_and_streams_raw_sessions(tmp_path):
    import base64
    import json

    from dcnet.mirror import anonymise, live_worker

    http, sink, seen = _servers()
    request = b"GET /a HTTP/1.1\r\nHost: x\r\nCookie: secret\r\n\r\n"
    second = b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"

    def events(sid, *chunks, end="fin"):
        return [json.dumps({"s": sid, "d": base64.b64encode(c).decode()}) for c in chunks] + \
            [json.dumps({"s": sid, "end": end})]
    lines = [json.dumps({"config": {"headers": ["cookie"], "key": b"k".hex()}}),
             *events("h", request[:7], request[7:30], request[30:] + second[:5], second[5:])]
    out = tmp_path / "http.jsonl"
    counts = live_worker.run(("127.0.0.1", http.server_address[1]), str(out), lines)
    assert counts == {"sessions": 1, "errors": 0}
    result = json.loads(out.read_text())
    assert (result["mode"], result["requests"], result["error"]) == ("http", 2, None)
    assert [base64.b64decode(a).endswith(p) for a, p in zip(result["answers"], [b"/a", b"/b"],
                                                            strict=True)] == [True, True]
    assert seen == [("/a", anonymise.token(b"secret", b"k").decode()), ("/b", None)]
    # a binary session: raw from its first bytes, sent whole, the answer read at EOF
    out = tmp_path / "raw.jsonl"
    counts = live_worker.run(("127.0.0.1", sink.getsockname()[1]), str(out),
                             [json.dumps({"config": {}}),
                              *events("r", b"\x00\x01", b"\x02" * 5, end="open")])
    result = json.loads(out.read_text())
    assert (result["mode"], result["sent"], result["end"]) == ("raw", 7, "open")
    assert base64.b64decode(result["answers"][0]) == b"got 7"
    assert seen[-1] == ("raw", b"\x00\x01" + b"\x02" * 5)
    http.shutdown()
    http.server_close()
    sink.close()


def test_a_raw_session_whose_server_answers_as_it_reads_does_not_block(tmp_path):
    """An echo server stops reading once its answers fill the socket buffers: the worker
    reads a raw session's answer while still sending, so 4 MiB go through (reading only
    after the last byte was sent, the session timed out after ~3 MB)."""
    import base64
    import json
    import threading

    from dcnet.mirror import live_worker

    echo = socket.socket()
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):     # small: it blocks early
        echo.setsockopt(socket.SOL_SOCKET, option, 4096)
    echo.bind(("127.0.0.1", 0))
    echo.listen()

    def serve():
        conn, _ = echo.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)
    threading.Thread(target=serve, daemon=True).start()
    piece = b"\x00" + bytes(range(1, 256)) * 256        # binary: raw from the start
    lines = [json.dumps({"config": {}})] + \
        [json.dumps({"s": "e", "d": base64.b64encode(piece).decode()})] * 64 + \
        [json.dumps({"s": "e", "end": "fin"})]
    out = tmp_path / "echo.jsonl"
    assert live_worker.run(("127.0.0.1", echo.getsockname()[1]), str(out), lines,
                           linger=60) == {"sessions": 1, "errors": 0}
    result = json.loads(out.read_text())
    assert (result["mode"], result["sent"], result["error"]) == ("raw", 64 * len(piece), None)
    assert base64.b64decode(result["answers"][0]) == piece * 64
    echo.close()


def test_a_lagging_copy_gets_no_new_session_and_keeps_the_ones_it_has():
    """The routing of LiveReplay with stand-in workers (they only record events)."""
    from dcnet.mirror.live import LiveReplay
    from dcnet.mirror.reassembly import Stream

    class Recorded:
        def __init__(self):
            self.backlog = self.shed = self.sessions = 0
            self.events = []

        def send(self, event):
            self.events.append(event)

    runner = LiveReplay("eth0", None, "10.0.0.1:80", 2.0, ["a", "b"], "/nonexistent",
                        max_backlog=1000)
    runner.workers = [Recorded(), Recorded()]

    def data(port, payload, stream=None):
        stream = stream or Stream()
        first = len(stream.chunks)
        stream.add(1 if not stream.chunks else 1 + len(stream.chunks[0].data), payload,
                   1.0, syn=False)
        runner._on_data(("10.1.0.1", port, "10.0.0.1", 80), stream, first)
        return stream

    old = data(40000, b"one")
    runner.workers[1].backlog = 5000                 # copy 1 lags behind
    data(40001, b"two")
    data(40000, b"more", old)                        # its old session goes on
    runner._ended(("10.1.0.1", 40000, "10.0.0.1", 80), old)
    first, second = runner.workers
    assert (first.sessions, first.shed, second.sessions, second.shed) == (2, 0, 1, 1)
    assert [e.get("end") or base64_text(e["d"]) for e in second.events] == \
        ["one", "more", "open"]
    assert len(first.events) == 4


def base64_text(data: str) -> str:
    import base64

    return base64.b64decode(data).decode()
