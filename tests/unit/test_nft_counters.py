"""The nft target's counter objects (pure): three per VIP:port, the counter maps and the
traffic chains that feed them, their commands, traffic not read as a change, apply
records made before them ignored, and the kernel's netlink dump of them decoded."""

from __future__ import annotations

import json
import struct

import pytest

from dcnet.nft import fingerprint, objects, ruleset, script, synth
from dcnet.nft.nftio import listing_digest
from dcnet.plan import Action, Change, Plan, diff

pytestmark = pytest.mark.unit

KEY4 = ("tcp", "198.51.100.10", 80)
KEY6 = ("tcp", "2001:db8::10", 80)


def desired(vip: str, persistence: int = 0):
    """One VIP:port with one server: flat (:mod:`dcnet.nft.flat`), or with persistence
    the chain layout."""
    return ruleset.desired(synth.model(synth.lab_model_text(
        vip, {"10.20.0.11": 1} if ":" not in vip else {"fd00::11": 1},
        persistence=persistence)))


@pytest.mark.parametrize(("key", "suffix"), [(KEY4, ""), (KEY6, "6")])
def test_every_vip_port_has_three_counters_and_two_map_elements(key, suffix):
    want = desired(key[1])
    for which in ("conns", "in", "out"):
        assert want.state[("counter", (*key, which))] == {}
    name = ruleset.svc_name(key).replace("svc-", "c{}-")
    assert want.state[("tally", (*key, "in"))] == {"counter": name.format("i")}
    assert want.state[("tally", (*key, "out"))] == {"counter": name.format("o")}
    assert ruleset.counter_map((*key, "in")) == f"cin{suffix}"
    # a flat VIP:port's new connections: its element of cnew, which lb4/lb6 counts by
    assert want.state[("tally", (*key, "conns"))] == {"counter": name.format("n")}
    assert ruleset.counter_map((*key, "conns")) == f"cnew{suffix}"
    lb = want.bodies[("lb", (f"lb{suffix or 4}",))]
    assert f"map @cnew{suffix} comment" in lb[0] and "counter name" in lb[0]
    # a chained one's: the service chain's first rule
    chained = desired(key[1], persistence=60)
    first = chained.bodies[("service", key)][0]
    assert f"counter name {name.format('n')} comment" in first
    assert ("tally", (*key, "conns")) not in chained.state
    # the traffic chains: before DNAT (in) and after un-NAT (out), both families
    assert want.state[("hook", ("traffic-in",))]["hook"] == "prerouting"
    assert want.state[("hook", ("traffic-out",))]["hook"] == "postrouting"
    assert want.state[("table", ("cout6",))] == {"type": ruleset.MAP_TYPES["services6"]}
    for name in (ruleset.counter_name((*key, "conns")), "cin", "cout6"):
        assert ruleset.parse_name(name)[0] in ("counter", "table")
    assert ruleset.parse_name(ruleset.counter_name((*key, "out"))) == (
        "counter", (*key, "out"))


def test_counters_and_their_elements_are_created_before_and_deleted_after_their_users():
    want = desired("198.51.100.10", persistence=60)
    text = script.script(Plan.build("nft", diff({}, want.state), ruleset.KIND_ORDER).changes,
                         want.bodies)
    lines = text.splitlines()
    counter = lines.index("add counter inet dcnet cn-tcp-198.51.100.10-80")
    element = lines.index('add element inet dcnet cin { 198.51.100.10 . tcp . 80 : '
                          '"ci-tcp-198.51.100.10-80" }')
    cmap = lines.index("add map inet dcnet cin { type ipv4_addr . inet_proto . inet_service "
                       ": counter; }")
    chain = lines.index("add chain inet dcnet svc-tcp-198.51.100.10-80")
    hook = next(i for i, ln in enumerate(lines) if "traffic-in {" in ln)
    assert cmap < counter < element < chain < hook
    gone = script.script(Plan.build("nft", diff(want.state, {}), ruleset.KIND_ORDER).changes,
                         {}).splitlines()
    assert gone.index("delete chain inet dcnet svc-tcp-198.51.100.10-80") < gone.index(
        "delete element inet dcnet cin { 198.51.100.10 . tcp . 80 }") < gone.index(
        "delete counter inet dcnet ci-tcp-198.51.100.10-80") < gone.index(
        "delete map inet dcnet cin")


def test_a_map_element_pointing_elsewhere_is_replaced_and_a_counter_never_updated():
    key = (*KEY4, "in")
    change = Change(Action.UPDATE, "tally", key, {"counter": "mine"},
                    {"counter": "ci-tcp-198.51.100.10-80"})
    assert script.commands(change, {}) == [
        "delete element inet dcnet cin { 198.51.100.10 . tcp . 80 }",
        'add element inet dcnet cin { 198.51.100.10 . tcp . 80 : "ci-tcp-198.51.100.10-80" }']
    with pytest.raises(ValueError):
        script.commands(Change(Action.UPDATE, "counter", (*KEY4, "conns"), {}, {}), {})


def test_traffic_through_the_counters_is_not_a_change_of_the_table():
    def listing(packets: int, octets: int) -> str:
        return json.dumps({"nftables": [{"counter": {
            "family": "inet", "name": "ci-tcp-198.51.100.10-80", "table": "dcnet",
            "handle": 3, "packets": packets, "bytes": octets}}]})

    assert listing_digest(listing(0, 0), ()) == listing_digest(listing(12, 3400), ())
    assert listing_digest(listing(0, 0), ()) != listing_digest(
        listing(0, 0).replace('"handle": 3', '"handle": 4'), ())


def test_an_apply_record_made_before_the_counters_is_ignored(tmp_path):
    path = str(tmp_path / "fingerprint-host")
    record = fingerprint.Record(7, "1:2", 0, {})
    fingerprint.save(path, record)
    assert fingerprint.load(path) == record
    with open(path, "w") as fh:                  # written by the version without counters
        fh.write(json.dumps({"genid": 7, "identity": "1:2", "objects": 0,
                             "table": "inet dcnet"}) + "\n")
    assert fingerprint.load(path) is None


def _object(table: str, name: str, packets: int, octets: int) -> bytes:
    data = (objects._attr(objects.NFTA_COUNTER_BYTES, struct.pack(">Q", octets))
            + objects._attr(objects.NFTA_COUNTER_PACKETS, struct.pack(">Q", packets)))
    body = (struct.pack("=BBH", 1, 0, 0)
            + objects._attr(objects.NFTA_OBJ_TABLE, table.encode() + b"\0")
            + objects._attr(objects.NFTA_OBJ_NAME, name.encode() + b"\0")
            + objects._attr(objects.NFTA_OBJ_TYPE, struct.pack(">I", 1))
            + objects._attr(objects.NFTA_OBJ_DATA | 0x8000, data))    # NLA_F_NESTED
    kind = (objects.NFNL_SUBSYS_NFTABLES << 8) | objects.NFT_MSG_NEWOBJ
    return struct.pack("=IHHII", 16 + len(body), kind, 2, 1, 0) + body


def test_the_kernel_dump_of_counter_objects_decodes_per_vip_port():
    request = objects.request(7)
    assert struct.unpack_from("=IHHII", request) == (len(request), 0x0A13, 0x301, 7, 0)
    out: dict = {}
    first = (_object("dcnet", "cn-tcp-198.51.100.10-80", 3, 180)
             + _object("dcnet", "ci-tcp-198.51.100.10-80", 30, 2400)
             + _object("other", "ci-tcp-198.51.100.11-80", 1, 1)       # another table
             + _object("dcnet", "mine", 1, 1))                         # not dcnet's name
    assert objects.parse_dump(first, out) is False                     # not done yet
    done = _object("dcnet", "co-udp-2001_db8__53-53", 2**40, 2**41) + struct.pack(
        "=IHHIIi", 20, objects.NLMSG_DONE, 2, 1, 0, 0)
    assert objects.parse_dump(done, out) is True
    assert out == {("tcp", "198.51.100.10", 80): {"conns": (3, 180), "in": (30, 2400)},
                   ("udp", "2001:db8::53", 53): {"out": (2**40, 2**41)}}
    error = struct.pack("=IHHIIi", 36, objects.NLMSG_ERROR, 0, 1, 0, -1) + bytes(16)
    with pytest.raises(OSError, match="refused"):
        objects.parse_dump(error, {})
