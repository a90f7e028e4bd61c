"""dcnet.sysio.nlmonitor's parsing (pure, on hand-built netlink messages) and the drift
event's changed_by/author label (dcnet.chaos.drift): an nftables batch is attributed
to its NEWGEN's process, a route to its port's, the kernel's and this process's own
changes are never authors, and the metric label stays bounded."""

from __future__ import annotations

import os
import socket
import struct

from dcnet.chaos import drift
from dcnet.sysio import nlmonitor as nm


def attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def message(kind: int, body: bytes, port: int) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, port) + body


def route(dst: str, plen: int, table: int) -> bytes:
    head = struct.pack("=BBBBBBBBI", socket.AF_INET, plen, 0, 0, 254, 4, 0, 1, 0)
    return head + attr(1, socket.inet_aton(dst)) + attr(15, struct.pack("=I", table))


def nft(kind: int, *attrs: bytes) -> bytes:
    return struct.pack("=BBH", 1, 0, 0) + b"".join(attrs)


def test_a_route_message_is_described_and_attributed_to_its_port():
    assert nm.describe_rt("route", route("10.9.9.0", 24, 1000)) == \
        "10.9.9.0/24 table 1000 proto 4"
    monitor = nm.Monitor()
    try:
        monitor._parse(message(24, route("10.9.9.0", 24, 101), os.getpid())
                       + message(25, route("10.9.8.0", 24, 101), 0), nft=False)
        first, second = monitor._changes
    finally:
        monitor.close()
    assert (first["kind"], first["action"], first["by"]["pid"]) == ("route", "new",
                                                                      os.getpid())
    assert first["by"]["comm"] and first["by"]["user"]
    assert (second["action"], second["by"]) == ("del", {"pid": 0, "comm": "kernel"})


def test_an_nft_batch_is_attributed_to_its_newgen_process():
    sub = nm.NFNL_SUBSYS_NFTABLES << 8
    batch = (message(sub | 6, nft(6, attr(1, b"dcnet\0"), attr(2, b"prerouting\0")), 77)
             + message(sub | 12, nft(12, attr(1, b"dcnet\0"), attr(2, b"services\0")), 77)
             + message(sub | nm.NFT_MSG_NEWGEN, nft(15, attr(1, struct.pack(">I", 9)),
                                                    attr(2, struct.pack(">I", 4_000_000)),
                                                    attr(3, b"nft\0")), 77))
    monitor = nm.Monitor()
    try:
        monitor._parse(batch, nft=True)
        changes = list(monitor._changes)
    finally:
        monitor.close()
    assert [(c["action"], c["what"]) for c in changes] == [
        ("new rule", "inet dcnet prerouting"), ("new element", "inet dcnet services")]
    assert {(c["by"]["pid"], c["by"]["comm"]) for c in changes} == {(4_000_000, "nft")}


def test_a_port_naming_no_process_is_said_so():
    found = nm.author_of_port(0xFFFFF123)
    assert found["pid"] is None and "names no running process" in found["note"]


def change(kind: str, pid: int, comm: str) -> dict:
    return {"time": 0.0, "kind": kind, "action": "new", "what": "x",
            "by": {"pid": pid, "comm": comm, "cmdline": f"{comm} x", "uid": 0,
                   "user": "root"}}


def test_changed_by_keeps_the_targets_kinds_and_leaves_out_kernel_and_self():
    changes = [change("route", 0, "kernel"), change("route", 41, "ip"),
               change("nft", 42, "nft"), change("route", 7, "elbctl"),
               change("address", 41, "ip")]
    who = drift.changed_by("nft", changes, self_pid=7)
    assert [(a["pid"], a["comm"]) for a in who["by"]] == [(41, "ip"), (42, "nft")]
    assert len(who["changes"]) == 3 and who["unknown"] == ""
    assert drift.author_label(who) == "ip"
    lvs = drift.changed_by("lvs", changes, self_pid=7)
    assert [a["comm"] for a in lvs["by"]] == ["ip"] and "IPVS" in lvs["unknown"]
    haproxy = drift.changed_by("haproxy", changes, self_pid=7)
    assert haproxy["by"] == [] and drift.author_label(haproxy) == "unknown"
    many = drift.changed_by("nft", [change("nft", 50 + i, "nft") for i in range(30)],
                            self_pid=7)
    assert len(many["changes"]) == drift.CHANGES_KEPT and many["changes_not_kept"] == 10
    odd = {"by": [{"pid": 3, "comm": "we ird/comm{x}=very-long-name"}]}
    assert drift.author_label(odd) == "we_ird_comm_x__"


def test_the_agents_author_counter_is_bounded(tmp_path):
    from dcnet.elbstore.driftwatch import AUTHOR_LABELS, DriftWatch
    from dcnet.elbstore.keys import Keys
    from dcnet.plan import Action, Change, Plan

    watch = DriftWatch("d", "nft", Keys(), str(tmp_path / "audit.jsonl"), watch=False,
                       log=lambda line: None)
    for i in range(AUTHOR_LABELS + 4):
        watch._seen = [change("nft", 100 + i, f"tool{i}")]
        plan = Plan("nft", (Change(Action.UPDATE, "service", (str(i),), {"w": i}, {"w": 0}),))
        event = watch.noticed(plan, "m", "alert")
        assert event["changed_by"]["by"][0]["comm"] == f"tool{i}"
    assert len(watch.authors) == AUTHOR_LABELS + 1 and watch.authors["other"] == 4
    watch._seen = None
    plan = Plan("nft", (Change(Action.UPDATE, "service", ("z",), {"w": 1}, {"w": 0}),))
    assert watch.noticed(plan, "m", "alert")["changed_by"]["unknown"] == \
        "not watched (turned off)"


def test_changes_beyond_keep_are_counted_as_lost_and_said_so():
    monitor = nm.Monitor(keep=2)
    try:
        for i in range(3):
            monitor._record(change("route", 40 + i, "ip"))
        assert [c["by"]["pid"] for c in monitor._changes] == [41, 42]
        assert monitor.lost == 1
        who = drift.changed_by("nft", list(monitor._changes), self_pid=7, lost=monitor.lost)
        assert who["lost"] == 1 and "were lost while watching" in who["unknown"]
        monitor.mark()
        assert monitor.lost == 0 and monitor.changes() == []
    finally:
        monitor.close()
