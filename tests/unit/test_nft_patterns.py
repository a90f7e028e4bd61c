"""dcnet.nft.patterns and the flat layout's pattern form (pure): canonical ids, the shared
slot -> index map, the VIP:port's elements, their commands and raw encoding, the read."""

from __future__ import annotations

import struct
from collections import Counter

import pytest

from dcnet.nft import fastpath, flat, patterns
from dcnet.plan import Action, Change

KEY = ("tcp", "198.51.100.10", 80)
KEY6 = ("udp", "2001:db8::10", 53)


def partitions(n: int, top: int | None = None):
    top = n if top is None else top
    if n == 0:
        yield []
        return
    for x in range(min(n, top), 0, -1):
        for rest in partitions(n - x, x):
            yield [x, *rest]


def test_ids_are_a_bijection_of_the_partitions_of_each_w():
    for w in range(1, 21):
        ids = [patterns.pattern_id(p) for p in partitions(w)]
        assert sorted(i & ((1 << patterns.ID_SHIFT) - 1) for i in ids) == list(range(len(ids)))
        assert all(i >> patterns.ID_SHIFT == w for i in ids)
        assert all(patterns.unrank(i) == p for i, p in zip(ids, partitions(w), strict=True))
    assert patterns.count(patterns.PAT_MAX, patterns.PAT_MAX) < 1 << patterns.ID_SHIFT
    top = patterns.pattern_id([patterns.PAT_MAX])
    assert patterns.SCRATCH | top < patterns.PICKED            # never mistaken for a pick
    for bad in ([1, 2], [65], []):
        with pytest.raises(ValueError):
            patterns.pattern_id(bad)


def test_picks_give_each_index_its_weight_of_the_slots():
    picks = patterns.picks([3, 2, 1])
    key = patterns.SCRATCH | patterns.pattern_id([3, 2, 1])
    assert [k for k, _v in picks] == [(key, s) for s in range(6)]
    assert Counter(v for _k, v in picks) == {patterns.PICKED: 3, patterns.PICKED | 1: 2,
                                             patterns.PICKED | 2: 1}


def test_uneven_weights_up_to_pat_max_take_the_pattern_form_heaviest_first():
    attrs = flat.attrs([("10.0.0.1", 80, 2), ("10.0.0.2", 80, 6), ("10.0.0.3", 80, 4)], 101)
    assert attrs == {"w": 6, "slots": ("0 10.0.0.2 . 80", "1 10.0.0.3 . 80", "2 10.0.0.1 . 80"),
                     "mark": 101, "pattern": patterns.pattern_id([3, 2, 1])}
    assert flat.pattern_parts(attrs) == [3, 2, 1]
    same = flat.attrs([("10.9.0.1", 80, 3), ("10.9.0.2", 80, 1), ("10.9.0.3", 80, 2)], 0)
    assert same["pattern"] == attrs["pattern"]                 # one pattern, shared
    big = flat.attrs([("10.0.0.1", 80, 60), ("10.0.0.2", 80, 7)], 0)   # W 67: slots
    assert "pattern" not in big and big["w"] == 67


def test_a_pattern_vip_port_adds_its_picks_and_indices_and_its_removal_keeps_the_picks():
    k = "198.51.100.10 . tcp . 80"
    new = flat.attrs([("10.0.0.1", 80, 1), ("10.0.0.2", 80, 2)], 0)
    pid = patterns.SCRATCH | new["pattern"]
    lines = flat.commands("inet dcnet", KEY, None, new)
    assert lines == [
        f"add element inet dcnet picks {{ {pid} . 0 : {patterns.PICKED}, {pid} . 1 : "
        f"{patterns.PICKED}, {pid} . 2 : {patterns.PICKED | 1} }}",
        f"add element inet dcnet pat4 {{ {k} : {pid} }}",
        f"add element inet dcnet wrp4 {{ {k} . {patterns.PICKED} : 10.0.0.2 . 80, "
        f"{k} . {patterns.PICKED | 1} : 10.0.0.1 . 80 }}",
        f"add element inet dcnet p4-3 {{ {k} }}", f"add element inet dcnet g4-0 {{ {k} }}",
        f"add element inet dcnet flat4 {{ {k} : 3 }}"]
    # to equal weights (the slot layout): the pattern's elements go, the slots come
    equal = flat.attrs([("10.0.0.1", 80, 1), ("10.0.0.2", 80, 1)], 0)
    moved = flat.commands("inet dcnet", KEY, new, equal)
    assert moved[0] == (f"delete element inet dcnet wrp4 {{ {k} . {patterns.PICKED}, "
                        f"{k} . {patterns.PICKED | 1} }}")
    assert f"delete element inet dcnet pat4 {{ {k} }}" in moved
    assert f"add element inet dcnet wr4 {{ {k} . 0 : 10.0.0.1 . 80, {k} . 1 : 10.0.0.2 . 80 }}" \
        in moved
    assert not any(" picks " in line for line in moved)        # another VIP:port may use it
    gone = flat.commands("inet dcnet", KEY, new, None)
    assert not any(" picks " in line for line in gone) and gone[-1].startswith("delete")


def test_the_read_of_a_pattern_vip_port_gives_its_attributes_back():
    attrs = flat.attrs([("fd00::1", 53, 1), ("fd00::2", 53, 3)], 0)
    pid = patterns.SCRATCH | attrs["pattern"]
    state = flat.parse({KEY6: 4}, {}, {}, {KEY6: pid},
                       {KEY6: {patterns.PICKED | 1: "fd00::1 . 53",
                               patterns.PICKED: "fd00::2 . 53"}})
    assert state == {("flat", KEY6): attrs}
    stray = flat.parse({}, {}, {}, {}, {KEY: {patterns.PICKED: "10.0.0.1 . 80"}})
    assert stray[("flat", KEY)]["w"] == 0 and "pattern" in stray[("flat", KEY)]


def test_raw_messages_key_the_picks_by_pattern_and_slot_in_host_order():
    new = flat.attrs([("10.0.0.1", 8080, 1), ("10.0.0.2", 8080, 3)], 0)
    msgs = fastpath.element_messages(Change(Action.CREATE, "flat", KEY, None, new))
    picks = next(m for m in msgs if b"picks\0" in m[2])
    pid = patterns.SCRATCH | new["pattern"]
    assert struct.pack("=II", pid, 3) in picks[2] and struct.pack("=I", patterns.PICKED | 1) \
        in picks[2]
    index = next(m for m in msgs if b"wrp4\0" in m[2])
    assert fastpath._key(KEY) + struct.pack("=I", patterns.PICKED) in index[2]
