"""Netns test of mirroring an IPv6 VIP (issue #19): the director's ``ip6 dcnet_mirror``
table copies the client->server packets (nft ``dup`` over IPv6) into the mirror
namespace; ``elbctl mirror live`` there reassembles every session byte-exact (the
recording it writes) and replays it at x2 over IPv6 from a pool of IPv6 source addresses
(one namespace per copy); the recording is then replayed from a file over IPv6 too. The
test server logs every production request once per copy and, at packet level, nothing of
a copy or its answers reaches the production client or server."""

from __future__ import annotations

import ipaddress
import json
import signal
import subprocess
import sys

import pytest
from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6

from dcnet.lab.mirror_service import http_sessions, read_log
from dcnet.mirror import recording, replay, rules
from tests.netns.mirror_checks import (
    Capture,
    copies_of,
    lines_of,
    paths_of,
    pool_left,
    stop,
    wait_until,
)

pytestmark = pytest.mark.netns

PY = sys.executable
CLIENT, DIRECTOR_C, DIRECTOR_S, SERVER = "fd93::1", "fd93::fe", "fd93:1::fe", "fd93:1::2"
MIRROR_D, MIRROR = "fd93:9::1", "fd93:9::2"
TARGET, POOL, R0 = "fd94::fe", "fd94::/64", "fd94::f0"
COPY_NET = ipaddress.ip_network(POOL)
PORT = 8080
SESSIONS, REQUESTS = 6, 3


def topology(log_dir: str) -> dict:
    serve = [PY, "-m", "dcnet.lab.mirror_service", "--bind", "::", "--port", str(PORT),
             "--log"]
    return {
        "hosts": ["client", {"name": "director",
                             "sysctls": {"net.ipv6.conf.all.forwarding": 1}},
                  "server", "mirror", "target", "sw", "r0"],
        "bridges": [{"name": "br0", "host": "sw"}],
        "links": [
            {"a": {"host": "client", "ifname": "eth0", "addresses": [f"{CLIENT}/64"]},
             "b": {"host": "director", "ifname": "c0", "addresses": [f"{DIRECTOR_C}/64"]}},
            {"a": {"host": "director", "ifname": "s0", "addresses": [f"{DIRECTOR_S}/64"]},
             "b": {"host": "server", "ifname": "eth0", "addresses": [f"{SERVER}/64"]}},
            {"a": {"host": "director", "ifname": "mir0", "addresses": [f"{MIRROR_D}/64"]},
             "b": {"host": "mirror", "ifname": "eth0", "addresses": [f"{MIRROR}/64"]}},
            {"a": {"host": "target", "ifname": "eth0", "addresses": [f"{TARGET}/64"]},
             "b": {"host": "sw", "ifname": "p-t", "bridge": "br0"}},
            {"a": {"host": "r0", "ifname": "eth0", "addresses": [f"{R0}/64"]},
             "b": {"host": "sw", "ifname": "p-r0", "bridge": "br0"}}],
        "routes": [{"host": "client", "dst": "default", "via": DIRECTOR_C},
                   {"host": "server", "dst": "default", "via": DIRECTOR_S}],
        "processes": [
            {"name": "prod", "host": "server", "argv": [*serve, f"{log_dir}/prod.log"],
             "ready_tcp_port": PORT},
            {"name": "target", "host": "target", "argv": [*serve, f"{log_dir}/target.log"],
             "ready_tcp_port": PORT}],
    }


def check_copies(entries: list[dict], sent: dict[int, bytes], copies: int) -> None:
    """Every production request once per copy, from that copy's address, in order."""
    by_copy = copies_of(entries, sorted(p for data in sent.values() for p in paths_of(data)))
    assert len(by_copy) == copies
    assert all(ipaddress.ip_address(source) in COPY_NET for source in by_copy)


def test_an_ipv6_vip_is_mirrored_reassembled_and_replayed_over_ipv6(lab_factory, tmp_path):
    lab = lab_factory(topology(str(tmp_path)))
    rules.apply(rules.MirrorSpec(((SERVER, PORT),), None, "mir0", to_address6=MIRROR),
                lab.netns("director"))
    target_log, rec = str(tmp_path / "target.log"), tmp_path / "live" / "rec.jsonl"
    command = subprocess.Popen(
        [PY, "-m", "dcnet.cli.elbctl", "mirror", "live", "--capture-netns",
         lab.netns("mirror"), "--target", f"[{TARGET}]:{PORT}", "--factor", "2",
         "--pool", POOL, "--via", "br0", "--via-netns", lab.netns("sw"),
         "--out-dir", str(tmp_path / "live"), "--record", str(rec)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: rec.exists() or command.poll() is not None,
                   "live replay never started")
        assert command.poll() is None, command.communicate()[1].decode()
        client_side, server_side = Capture(lab, "client", 6), Capture(lab, "server", 6)
        sent = lab.call("client", http_sessions, SERVER, PORT, SESSIONS, REQUESTS)
        wait_until(lambda: lines_of(target_log) >= 2 * SESSIONS * REQUESTS,
                   "the copies never reached the target")
        command.send_signal(signal.SIGTERM)
        stdout, stderr = command.communicate(timeout=60)
    finally:
        stop(command)
    assert command.returncode == 0, stderr.decode()
    summary = json.loads(stdout)
    assert [(c["exit"], c["sessions"], c["replayed"], c["errors"])
            for c in summary["copies"]] == [(0, SESSIONS, SESSIONS, 0)] * 2
    assert summary["kernel_drops6"] == 0
    # the capture: every session byte-exact, with SYN and FIN, [IPv6]:port addresses
    sessions = recording.read(str(rec))
    by_port = {int(s.client.rpartition(":")[2]): s for s in sessions}
    assert set(by_port) == set(sent)
    for port, data in sent.items():
        session = by_port[port]
        assert session.payload == data and session.missing == 0
        assert session.syn and session.end == "fin"
        assert (session.client, session.server) == \
            (f"[{CLIENT}]:{port}", f"[{SERVER}]:{PORT}")
    # (from_mirror may count the mirror namespace's own MLD reports: dropped there)
    assert rules.counters(lab.netns("director"), "ip6")["copied"] > 0
    entries = read_log(target_log)
    assert len(entries) == 2 * SESSIONS * REQUESTS
    check_copies(entries, sent, 2)
    # production at packet level: its TCP is between client and server only, and no
    # packet from or to the copies' network or the mirror link reached either side
    for side in (client_side.finish(), server_side.finish()):
        assert any(TCP in p for p in side), "the capture saw no TCP"
        assert {(p.src, p.dst) for p in side if TCP in p} <= \
            {(CLIENT, SERVER), (SERVER, CLIENT)}
        for packet in side:
            for address in (packet.src, packet.dst):
                assert ipaddress.ip_address(address) not in COPY_NET, packet.summary()
                assert not address.startswith("fd93:9:"), packet.summary()
    syns = [IPv6(p) for p in server_side.packets
            if TCP in IPv6(p) and IPv6(p)[TCP].flags == "S"]
    # production's connections only (a retransmitted SYN is the same connection)
    assert len({(p.src, p[TCP].sport) for p in syns}) == SESSIONS
    assert pool_left(stderr) == []
    # the recording replayed from the file over IPv6, x1 from the lab's r0
    out = tmp_path / "file"
    out.mkdir()
    result = replay.run_replay(str(rec), 1.0, f"[{TARGET}]:{PORT}", [lab.netns("r0")],
                               str(out))
    assert [(c["exit"], c["replayed"], c["errors"]) for c in result["copies"]] == \
        [(0, SESSIONS, 0)]
    check_copies(read_log(target_log)[len(entries):], sent, 1)
    assert len(read_log(str(tmp_path / "prod.log"))) == SESSIONS * REQUESTS
