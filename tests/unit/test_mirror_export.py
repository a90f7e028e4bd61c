"""Anonymising a recording (chosen HTTP headers and clients, keyed and stable, timing and
gaps kept) and exporting it as pcap (read back by scapy: addresses, ports, sequence
numbers, payload and flags as recorded)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from scapy.all import IP, TCP, IPv6, rdpcap

from dcnet.cli.elbctl import cli
from dcnet.mirror import anonymise, pcap, recording
from dcnet.mirror.recording import Chunk, Session

pytestmark = pytest.mark.unit

KEY = b"k" * 32
REQ1 = (b"GET /a HTTP/1.1\r\nHost: shop\r\nAuthorization: Bearer secret-1\r\n"
        b"Cookie: s=abc\r\n\r\n")
REQ2 = b"POST /b HTTP/1.1\r\nHost: shop\r\nCookie: s=abc\r\nContent-Length: 9\r\n\r\nCookie: x"


def session(client="10.0.0.7:40000", server="203.0.113.10:80", end="fin") -> Session:
    data = REQ1 + REQ2
    cut = len(REQ1) + 20                        # a chunk boundary inside REQ2's headers
    return Session("s1", client, server, 1000.0, True, end, 5, 0,
                   (Chunk(0, 0.0, data[:cut]), Chunk(cut + 5, 0.25, data[cut:])))


def test_headers_are_replaced_by_stable_tokens_and_bodies_left_alone():
    out = anonymise.redact_session(session(), anonymise.DEFAULT_REDACTED, KEY)
    text = out.payload
    assert b"secret-1" not in text and b"s=abc" not in text
    token = anonymise.token(b"s=abc", KEY)
    assert text.count(b"Cookie: " + token) == 2            # same value, same token
    assert text.endswith(b"\r\n\r\nCookie: x")             # the body is not a header
    assert b"GET /a HTTP/1.1\r\nHost: shop\r\n" in text
    assert [c.t for c in out.chunks] == [0.0, 0.25]        # timing kept
    gap_before = out.chunks[1].offset - len(out.chunks[0].data)
    assert gap_before == 5                                 # the missing bytes stay a gap
    assert anonymise.redact_session(session(), ["x-none"], KEY) == session()


def test_a_non_http_session_is_unchanged():
    raw = Session("r", "10.0.0.1:1", "10.0.0.2:2", 0.0, chunks=(Chunk(0, 0.0, b"\x00\x01"),))
    assert anonymise.redact_session(raw, anonymise.DEFAULT_REDACTED, KEY) == raw


@pytest.mark.parametrize("client,server,ip", [
    ("10.0.0.7:40000", "203.0.113.10:80", IP),
    ("[fd00::7]:40000", "[2001:db8::10]:80", IPv6),
    ("anon-0123456789abcdef:40000", "203.0.113.10:80", IP),
])
def test_pcap_holds_each_session_as_recorded(tmp_path, client, server, ip):
    path = str(tmp_path / "out.pcap")
    assert pcap.write(path, [session(client, server)], mss=40) > 3
    packets = rdpcap(path)
    assert all(p.haslayer(ip) and p.haslayer(TCP) for p in packets)
    tcp = [p[TCP] for p in packets]
    assert tcp[0].flags == "S" and tcp[-1].flags == "FA"
    assert {t.dport for t in tcp} == {80} and {t.sport for t in tcp} == {40000}
    data = {t.seq: bytes(t.payload) for t in tcp if bytes(t.payload)}
    first = pcap.ISN + 1
    stream = b"".join(data[s] for s in sorted(data))
    assert stream == session().payload
    assert max(data) + len(data[max(data)]) - first == len(session().payload) + 5  # gap kept
    for p in packets:                                        # checksums as the kernel does
        raw = p.__class__(bytes(p))
        del raw[TCP].chksum
        assert p.__class__(bytes(raw))[TCP].chksum == p[TCP].chksum


def test_cli_anonymise_then_export(tmp_path):
    source, anon, out = (str(tmp_path / n) for n in ("r.jsonl", "a.jsonl", "a.pcap"))
    recording.write(source, [session()])
    runner = CliRunner()
    done = runner.invoke(cli, ["mirror", "anonymise", "--recording", source, "--out", anon,
                               "--key", "k"])
    assert done.exit_code == 0, done.output
    (got,) = recording.read(anon)
    assert got.client.startswith("anon-") and b"secret-1" not in got.payload
    done = runner.invoke(cli, ["mirror", "export", "--recording", anon, "--pcap", out])
    assert done.exit_code == 0 and "packets written" in done.output, done.output
    assert len(rdpcap(out)) == 4
