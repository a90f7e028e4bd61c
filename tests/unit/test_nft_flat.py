"""The nft target's flat layout (pure): which VIP:ports are flat, their slots and exact
shares, the commands and raw messages of a change, the read of the listed elements, and
the raw path's size bound. (tests/netns/test_nft_fastpath.py applies them to a kernel.)"""

from __future__ import annotations

import socket
import struct
from collections import Counter

import pytest

from dcnet.nft import fastpath, flat, patterns, ruleset, synth
from dcnet.plan import Action, Change

pytestmark = pytest.mark.unit

KEY = ("tcp", "198.51.100.10", 80)
KEY6 = ("udp", "2001:db8::10", 53)


def desired(servers: dict[str, int], **kw):
    return ruleset.desired(synth.model(synth.lab_model_text(KEY[1], servers, **kw)))


def test_slots_give_each_backend_its_exact_share_after_the_gcd():
    # W = 71 (above PAT_MAX): the slot layout
    attrs = flat.attrs([("10.0.0.1", 80, 400), ("10.0.0.2", 80, 300), ("10.0.0.3", 80, 10)], 7)
    assert attrs["w"] == 71 and attrs["mark"] == 7 and "pattern" not in attrs
    held = Counter(s.split(" ", 1)[1] for s in attrs["slots"])
    assert held == {"10.0.0.1 . 80": 40, "10.0.0.2 . 80": 30, "10.0.0.3 . 80": 1}
    assert [int(s.split(" ", 1)[0]) for s in attrs["slots"]] == list(range(71))
    equal = flat.attrs([("10.0.0.1", 80, 5), ("10.0.0.2", 80, 5)], 0)    # equal: slots
    assert equal == {"w": 2, "slots": ("0 10.0.0.1 . 80", "1 10.0.0.2 . 80"), "mark": 0}
    assert flat.attrs([], 0) == {"w": 0, "slots": (), "mark": 0}


def test_only_plain_weighted_ports_up_to_256_are_flat():
    assert ("flat", KEY) in desired({"10.20.0.11": 1, "10.20.0.12": 255}).state
    for chained in (desired({"10.20.0.11": 1, "10.20.0.12": 256}),      # W 257
                    desired({"10.20.0.11": 1}, persistence=60),
                    desired({"10.20.0.11": 1, "10.20.0.12": 1}, scheduler="mh")):
        assert ("flat", KEY) not in chained.state
        assert ("service", KEY) in chained.state and ("element", KEY) in chained.state
    drained = desired({"10.20.0.11": 0})
    assert drained.state[("flat", KEY)] == {"w": 0, "slots": (), "mark": 0}


def test_group_and_class_names_parse_back_and_others_do_not():
    assert ruleset.parse_name("w4-256") == ("classes", (4,))
    assert ruleset.parse_name("g6-15") == ("classes", (6,))
    for foreign in ("w4-0", "w4-257", "g4-16", "w4-01", "w5-3", "g4-x"):
        assert ruleset.parse_name(foreign) is None, foreign
    assert ruleset.parse_name("lb4") == ("lb", ("lb4",))
    assert ruleset.parse_name("lb6-3") == ("lbgroup", ("lb6-3",))
    assert ruleset.parse_name("p4-64") == ("classes", (4,))
    for foreign in ("p4-1", "p4-65", "p6-02"):
        assert ruleset.parse_name(foreign) is None, foreign
    assert len(flat.class_sets(4)) == flat.GROUPS + flat.FLAT_MAX + patterns.PAT_MAX - 1


def test_an_update_deletes_what_the_old_attributes_name_and_adds_the_new():
    old = flat.attrs([("10.0.0.1", 80, 1), ("10.0.0.2", 80, 1)], 0)
    new = flat.attrs([("10.0.0.1", 80, 1)], 101)
    lines = flat.commands("inet dcnet", KEY, old, new)
    k = "198.51.100.10 . tcp . 80"
    assert lines == [
        f"delete element inet dcnet wr4 {{ {k} . 0, {k} . 1 }}",
        f"add element inet dcnet w4-2 {{ {k} }}", f"delete element inet dcnet w4-2 {{ {k} }}",
        f"add element inet dcnet g4-0 {{ {k} }}", f"delete element inet dcnet g4-0 {{ {k} }}",
        f"add element inet dcnet flat4 {{ {k} : 2 }}", f"delete element inet dcnet flat4 {{ {k} }}",
        f"add element inet dcnet marks4 {{ {k} : 101 }}",
        f"add element inet dcnet wr4 {{ {k} . 0 : 10.0.0.1 . 80 }}",
        f"add element inet dcnet w4-1 {{ {k} }}", f"add element inet dcnet g4-0 {{ {k} }}",
        f"add element inet dcnet flat4 {{ {k} : 1 }}"]
    gone = flat.commands("inet dcnet", KEY6, flat.attrs([("fd00::1", 53, 1)], 5), None)
    assert gone[0] == "delete element inet dcnet wr6 { 2001:db8::10 . udp . 53 . 0 }"
    assert "delete element inet dcnet marks6 { 2001:db8::10 . udp . 53 }" in gone
    assert gone[-1] == "delete element inet dcnet flat6 { 2001:db8::10 . udp . 53 }"


def test_the_read_of_listed_elements_keeps_strays_so_they_are_deleted():
    state = flat.parse({KEY: 2}, {KEY: {1: "10.0.0.2 . 80", 0: "10.0.0.1 . 80"},
                                  KEY6: {0: "fd00::1 . 53"}}, {})
    assert state[("flat", KEY)] == {"w": 2, "slots": ("0 10.0.0.1 . 80", "1 10.0.0.2 . 80"),
                                    "mark": 0}
    assert state[("flat", KEY6)] == {"w": 0, "slots": ("0 fd00::1 . 53",), "mark": 0}


def test_raw_element_messages_encode_keys_as_nft_pads_them():
    new = flat.attrs([("10.0.0.1", 8080, 1)], 0)
    msgs = fastpath.element_messages(Change(Action.CREATE, "flat", KEY, None, new))
    assert [m[0] for m in msgs] == [fastpath.MSG["newsetelem"]] * 4
    key = socket.inet_aton(KEY[1]) + bytes([6, 0, 0, 0]) + struct.pack(">H2x", 80)
    slot = key + struct.pack("=I", 0)
    data = socket.inet_aton("10.0.0.1") + struct.pack(">H2x", 8080)
    assert slot in msgs[0][2] and data in msgs[0][2] and b"wr4\0" in msgs[0][2]
    assert b"flat4\0" in msgs[-1][2] and struct.pack("=I", 1) in msgs[-1][2]
    key6 = fastpath._key(KEY6)
    assert key6 == socket.inet_pton(socket.AF_INET6, KEY6[1]) + bytes([17, 0, 0, 0]) + \
        struct.pack(">H2x", 53)
    tally = Change(Action.CREATE, "tally", (*KEY, "conns"), None, {"counter": "cn-x"})
    [(mtype, _flags, attrs)] = fastpath.element_messages(tally)
    assert mtype == fastpath.MSG["newsetelem"] and b"cnew\0" in attrs and b"cn-x\0" in attrs


def test_a_plan_of_too_many_elements_leaves_the_raw_path():
    def change(n: int) -> Change:
        slots = tuple(f"{i} 10.0.0.1 . 80" for i in range(n))
        return Change(Action.CREATE, "flat", KEY, None, {"w": n, "slots": slots, "mark": 0})

    assert fastpath.eligible([change(200)], {})
    assert not fastpath.eligible([change(200)] * 100, {})       # 20,000+ elements
