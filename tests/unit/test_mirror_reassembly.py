"""Unit tests of the mirror's pure parts: TCP reassembly, the recording format,
anonymisation, the nft ruleset text and the replay plan."""

from __future__ import annotations

import pytest

from dcnet.mirror import recording, rules
from dcnet.mirror.reassembly import MOD, Stream
from dcnet.mirror.recorder import Recorder, Segment

pytestmark = pytest.mark.unit

ISN = MOD - 5    # the stream wraps around 2**32


def payload(stream: Stream) -> bytes:
    return b"".join(c.data for c in stream.chunks)


def test_in_order_stream_with_wrap():
    s = Stream()
    s.add(ISN, b"", 1.0, syn=True)
    s.add(ISN + 1, b"hello ", 1.1)
    s.add((ISN + 7) % MOD, b"world", 1.2, fin=True)
    assert payload(s) == b"hello world" and s.closed and s.finish() == 0
    assert [c.offset for c in s.chunks] == [0, 6]


def test_out_of_order_retransmit_and_overlap():
    s = Stream()
    s.add(100, b"", 0.0, syn=True)
    s.add(108, b"789", 0.3)           # ahead of a hole
    s.add(101, b"0123", 0.1)
    s.add(101, b"0123", 0.2)          # retransmit
    s.add(103, b"23456", 0.4)         # overlaps both sides of what is held
    s.add(111, b"", 0.5, fin=True)
    assert payload(s) == b"0123456789"
    assert s.closed and s.finish() == 0 and s.retransmitted > 0


def test_gap_is_kept_at_its_offset_and_counted():
    s = Stream()
    s.add(0, b"", 0.0, syn=True)
    s.add(1, b"ab", 0.1)
    s.add(6, b"fg", 0.2, fin=True)
    assert not s.closed
    assert s.finish() == 3
    assert [(c.offset, c.data) for c in s.chunks] == [(0, b"ab"), (5, b"fg")]


def test_without_syn_the_stream_is_partial():
    s = Stream()
    s.add(5000, b"xy", 0.0)
    s.add(5002, b"z", 0.1, fin=True)
    assert s.partial and payload(s) == b"xyz" and s.closed


def test_recorder_emits_sessions_and_round_trips_the_format(tmp_path):
    out = []
    rec = Recorder(out.append)
    key = ("10.0.0.1", 40000, "10.0.1.2", 80)
    rec.feed(Segment(*key, 9, 0x02, b""), 10.0)
    rec.feed(Segment(*key, 13, 0x18, b"def"), 10.2)
    rec.feed(Segment(*key, 10, 0x18, b"abc"), 10.3)
    rec.feed(Segment(*key, 16, 0x11, b""), 10.4)
    assert len(out) == 1 and out[0].payload == b"abcdef" and out[0].end == "fin"
    assert out[0].client == "10.0.0.1:40000" and out[0].syn
    path = str(tmp_path / "r.jsonl")
    recording.write(path, out)
    assert recording.read(path) == out


def test_anonymised_client_is_stable_and_hides_the_address():
    a = recording.anonymise_address("10.0.0.1:1", b"k")
    assert a.startswith("anon-") and "10.0.0.1" not in a and a.endswith(":1")
    assert recording.anonymise_address("10.0.0.1:2", b"k").split(":")[0] == a.split(":")[0]
    assert recording.anonymise_address("10.0.0.1:1", b"other") != a


def test_ruleset_samples_by_session_hash_and_drops_what_comes_back():
    spec = rules.MirrorSpec((("10.0.1.2", 80),), "10.9.0.2", "mir0", percent=10)
    text = rules.ruleset(spec)
    assert "jhash ip saddr . tcp sport mod 100 seed 0x0 < 10" in text
    assert 'dup to 10.9.0.2 device "mir0"' in text
    assert 'iifname "mir0" counter name from_mirror drop' in text
    assert "jhash" not in rules.ruleset(rules.MirrorSpec((("10.0.1.2", 80),),
                                                         "10.9.0.2", "mir0"))
    with pytest.raises(ValueError):
        rules.MirrorSpec((("10.0.1.2", 80),), "10.9.0.2", 'x" drop', 10)
    assert rules.parse_service("10.0.1.2:443") == ("10.0.1.2", 443)
