"""Netns tests of traffic mirroring (issue #19): the director's nft ``dup`` copies the
client->server packets into a mirror namespace, the recorder there reassembles every
session exactly, nothing from the mirror side reaches the client or the server; replay
delivers every recorded request to a target at x1 and x10, each copy from its own
namespace and address, without duplicates and in order."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

import pytest
from click.testing import CliRunner
from scapy.layers.inet import IP, TCP

from dcnet.cli.elbctl import cli
from dcnet.lab.mirror_service import http_sessions, read_log, request_bytes
from dcnet.mirror import diff, recording, replay, rules
from tests.netns.mirror_checks import Capture, copies_of, paths_of

pytestmark = pytest.mark.netns

PY = sys.executable
CLIENT, DIRECTOR_C, DIRECTOR_S, SERVER = "10.91.0.1", "10.91.0.254", "10.91.1.254", "10.91.1.2"
MIRROR_D, MIRROR = "10.91.9.1", "10.91.9.2"
TARGET = "10.92.0.254"
PORT = 8080
COPIES = 10


def topology(log_dir: str) -> dict:
    links = [
        {"a": {"host": "client", "ifname": "eth0", "addresses": [f"{CLIENT}/24"]},
         "b": {"host": "director", "ifname": "c0", "addresses": [f"{DIRECTOR_C}/24"]}},
        {"a": {"host": "director", "ifname": "s0", "addresses": [f"{DIRECTOR_S}/24"]},
         "b": {"host": "server", "ifname": "eth0", "addresses": [f"{SERVER}/24"]}},
        {"a": {"host": "director", "ifname": "mir0", "addresses": [f"{MIRROR_D}/30"]},
         "b": {"host": "mirror", "ifname": "eth0", "addresses": [f"{MIRROR}/30"]}},
        {"a": {"host": "target", "ifname": "eth0", "addresses": [f"{TARGET}/24"]},
         "b": {"host": "sw", "ifname": "p-t", "bridge": "br0"}},
    ]
    for i in range(COPIES):
        links.append({"a": {"host": f"r{i}", "ifname": "eth0",
                            "addresses": [f"10.92.0.{10 + i}/24"]},
                      "b": {"host": "sw", "ifname": f"p-r{i}", "bridge": "br0"}})
    serve = [PY, "-m", "dcnet.lab.mirror_service", "--port", str(PORT), "--log"]
    return {
        "hosts": ["client", {"name": "director", "sysctls": {"net.ipv4.ip_forward": 1}},
                  "server", "mirror", "target", "sw", *[f"r{i}" for i in range(COPIES)]],
        "bridges": [{"name": "br0", "host": "sw"}],
        "links": links,
        "routes": [{"host": "client", "dst": "default", "via": DIRECTOR_C},
                   {"host": "server", "dst": "default", "via": DIRECTOR_S}],
        "processes": [
            {"name": "prod", "host": "server", "argv": [*serve, f"{log_dir}/prod.log"],
             "ready_tcp_port": PORT},
            {"name": "target", "host": "target", "argv": [*serve, f"{log_dir}/target.log"],
             "ready_tcp_port": PORT},
            {"name": "secondary", "host": "target", "ready_tcp_port": PORT + 1, "argv": [
                *serve[:3], "--port", str(PORT + 1), "--log", f"{log_dir}/secondary.log"]},
            {"name": "candidate", "host": "target", "ready_tcp_port": PORT + 2, "argv": [
                *serve[:3], "--port", str(PORT + 2), "--log", f"{log_dir}/candidate.log",
                "--variant", "changed"]},
        ],
    }


WATCH = """table ip watch {
  counter from_mirror { }
  counter syn_in { }
  chain input {
    type filter hook prerouting priority -400; policy accept;
    ip saddr 10.91.9.0/24 counter name from_mirror
    tcp flags & (syn | ack) == syn counter name syn_in
  }
}
"""


def watch_counters(lab, host: str) -> dict[str, int]:
    done = lab.run(host, ["nft", "-j", "list", "counters", "table", "ip", "watch"])
    return {item["counter"]["name"]: item["counter"]["packets"]
            for item in json.loads(done.stdout)["nftables"] if "counter" in item}


def wait_for(path: str, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{what}: {path} never appeared"
        time.sleep(0.05)


@pytest.fixture
def mirrored(lab_factory, tmp_path):
    """The lab with the mirror rules applied at the director; yields (lab, tmp_path)."""
    lab = lab_factory(topology(str(tmp_path)))
    for host in ("client", "server"):
        lab.run(host, ["nft", "-f", "-"], input=WATCH)
    return lab, tmp_path


def record(lab, tmp_path, percent: int, sessions: int, requests: int, *extra: str,
           via_cli: bool = False):
    if via_cli:
        done = CliRunner().invoke(cli, [
            "mirror", "rules", "--service", f"{SERVER}:{PORT}", "--to", MIRROR,
            "--device", "mir0", "--percent", str(percent), "--netns", lab.netns("director"),
            "--apply"])
        assert done.exit_code == 0, done.output
    else:
        spec = rules.MirrorSpec(((SERVER, PORT),), MIRROR, "mir0", percent)
        rules.apply(spec, netns=lab.netns("director"))
    out = str(tmp_path / "rec.jsonl")
    recorder = lab.start("mirror", [PY, "-m", "dcnet.mirror.recorder", "--ifname", "eth0",
                                    "--out", out, *extra], name="recorder",
                         log_path=str(tmp_path / "recorder.log"))
    wait_for(out, "recorder")
    sent = lab.call("client", http_sessions, SERVER, PORT, sessions, requests)
    time.sleep(0.3)   # the last ACK/FIN copies are in flight to the mirror veth
    os.kill(recorder.pid, signal.SIGTERM)
    assert recorder.wait(10) == 0
    return sent, recording.read(out)


def test_every_session_is_recorded_exactly_and_the_mirror_never_answers(mirrored):
    lab, tmp_path = mirrored
    sent, sessions = record(lab, tmp_path, 100, sessions=20, requests=3)
    assert len(sent) == 20
    by_port = {int(s.client.rpartition(":")[2]): s for s in sessions}
    assert set(by_port) == set(sent)
    for port, data in sent.items():
        session = by_port[port]
        assert session.payload == data, port
        assert session.syn and session.end == "fin" and session.missing == 0
        assert session.client == f"{CLIENT}:{port}" and session.server == f"{SERVER}:{PORT}"
        offsets = [c.offset for c in session.chunks]
        assert offsets == sorted(offsets) and offsets[0] == 0
        assert len(session.chunks) == 3    # one request a chunk: the client waited
    assert len(read_log(str(tmp_path / "prod.log"))) == 60
    director = rules.counters(lab.netns("director"))
    assert director["copied"] > 0 and director["from_mirror"] == 0
    with open(tmp_path / "recorder.log") as handle:
        stats = json.loads(handle.read().splitlines()[-1])
    # every copy the kernel made reached the recorder's socket, none dropped there
    assert (stats["kernel_packets"], stats["kernel_drops"]) == (director["copied"], 0)
    assert stats["sessions"] == 20
    assert watch_counters(lab, "client")["from_mirror"] == 0
    server = watch_counters(lab, "server")
    assert server["from_mirror"] == 0
    assert server["syn_in"] == 20      # no copy of a SYN reached production


def test_a_share_of_sessions_by_hash_and_anonymised_clients(mirrored):
    lab, tmp_path = mirrored
    sent, sessions = record(lab, tmp_path, 50, 40, 1, "--anonymise-key", "random",
                            via_cli=True)
    shown = CliRunner().invoke(cli, ["mirror", "show", str(tmp_path / "rec.jsonl")])
    assert json.loads(shown.output)["sessions"] == len(sessions)
    assert 0 < len(sessions) < 40      # P(0 or 40 of 40 at 50%) ~ 2e-12
    ports = set()
    for session in sessions:
        assert CLIENT not in session.client and session.client.startswith("anon-")
        ports.add(int(session.client.rpartition(":")[2]))
        assert session.payload == sent[int(session.client.rpartition(":")[2])]
    assert ports <= set(sent)


def check_deliveries(entries: list[dict], sessions, copies: int) -> None:
    """Every recorded request once per copy, from that copy's own address, in order."""
    wanted = sorted(p for s in sessions for p in paths_of(s.payload))
    by_copy = copies_of(entries, wanted)
    assert sorted(by_copy) == sorted(f"10.92.0.{10 + i}" for i in range(copies))


def test_replay_at_x1_and_x10_delivers_every_request_once_in_order(mirrored):
    lab, tmp_path = mirrored
    sent, sessions = record(lab, tmp_path, 100, sessions=20, requests=3)
    assert len(sessions) == len(sent) == 20
    rec = str(tmp_path / "rec.jsonl")
    namespaces = [lab.netns(f"r{i}") for i in range(COPIES)]
    target_log = str(tmp_path / "target.log")
    done = 0
    for factor, copies in ((1.0, 1), (10.0, 10)):
        out = tmp_path / f"x{factor:g}"
        out.mkdir()
        target_side, client_side = Capture(lab, "target", ifname="eth0"), Capture(lab, "client")
        summary = replay.run_replay(rec, factor, f"{TARGET}:{PORT}", namespaces, str(out))
        seen = target_side.finish()
        syns = [p for p in seen if TCP in p and p[TCP].flags == "S"]
        # one connection a session, no source port reused (a SYN retransmitted on a
        # loaded machine is the same connection: count connections, not SYNs)
        assert len({(p[IP].src, p[TCP].sport) for p in syns}) == 20 * copies
        assert {p[IP].src for p in syns} == {f"10.92.0.{10 + i}" for i in range(copies)}
        # on the target's wire: only the copies and the target itself
        strangers = [p.summary() for p in seen
                     if not (p[IP].src.startswith("10.92.0.") or p[IP].src == TARGET)]
        assert strangers == []
        assert client_side.finish() == []       # no copy's packet or reply at the client
        assert [c["copy"] for c in summary["copies"]] == list(range(copies))
        for copy in summary["copies"]:
            assert (copy["exit"], copy["replayed"], copy["errors"]) == (0, 20, 0), copy
        entries = read_log(target_log)[done:]
        done += len(entries)
        assert len(entries) == 60 * copies
        check_deliveries(entries, sessions, copies)
    # production saw only its own 60 requests: replay never touched it
    assert len(read_log(str(tmp_path / "prod.log"))) == 60
    assert watch_counters(lab, "server")["syn_in"] == 20


def test_diff_reports_the_changed_endpoint_and_no_false_difference(mirrored):
    lab, tmp_path = mirrored
    sessions = []
    for i in range(30):
        paths = [f"/item/{i}", f"/item/{i}/changed" if i % 3 == 0 else f"/list/{i}"]
        payload = b"".join(request_bytes(TARGET, p) for p in paths)
        sessions.append(recording.Session(
            f"s{i}", f"{CLIENT}:{40000 + i}", f"{SERVER}:{PORT}", 0.0,
            chunks=(recording.Chunk(0, 0.0, payload),)))
    report = lab.call("r0", diff.run_diff, sessions, (TARGET, PORT + 2), (TARGET, PORT),
                      (TARGET, PORT + 1))
    assert (report["requests"], report["failed_sessions"], report["skipped_sessions"]) == \
        (60, 0, 0)
    endpoints = report["endpoints"]
    assert endpoints["GET /item/N/changed"]["differences"] == 10
    assert endpoints["GET /item/N/changed"]["fields"] == ["body"]
    assert report["differences"] == 10           # nothing else: no false difference
    example = endpoints["GET /item/N/changed"]["examples"][0]["fields"]["body"]
    assert example["candidate"].startswith("GET /item/") and \
        example["candidate"] != example["primary"]
    rec = str(tmp_path / "synthetic.jsonl")
    recording.write(rec, sessions)
    done = lab.call("r0", CliRunner().invoke, cli, [
        "mirror", "diff", "--recording", rec, "--candidate", f"{TARGET}:{PORT + 2}",
        "--primary", f"{TARGET}:{PORT}", "--secondary", f"{TARGET}:{PORT + 1}"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["differences"] == 10


SINK = """
import socket, sys, threading
log = open(sys.argv[1], "a")
lock = threading.Lock()
def serve(conn):
    data = b""
    while True:
        more = conn.recv(65536)
        if not more:
            break
        data += more
    conn.sendall(b"got %d" % len(data))
    conn.close()
    with lock:
        log.write(data.hex() + "\\n")
        log.flush()
srv = socket.create_server(("0.0.0.0", int(sys.argv[2])))
while True:
    threading.Thread(target=serve, args=(srv.accept()[0],), daemon=True).start()
"""


def test_raw_tcp_sessions_are_replayed_in_order_with_timing(mirrored):
    lab, tmp_path = mirrored
    sink_log = tmp_path / "sink.log"
    lab.start("target", [PY, "-c", SINK, str(sink_log), str(PORT + 3)], name="sink")
    lab.call("r0", wait_port, TARGET, PORT + 3)
    sessions = [recording.Session(
        f"raw{i}", f"{CLIENT}:{41000 + i}", f"{SERVER}:{PORT}", 0.0,
        chunks=tuple(recording.Chunk(o, o / 1000, bytes([i, o]) * 3)
                     for o in range(0, 30, 6))) for i in range(5)]
    rec = str(tmp_path / "raw.jsonl")
    recording.write(rec, sessions)
    summary = replay.run_replay(rec, 2.0, f"{TARGET}:{PORT + 3}",
                                [lab.netns("r0"), lab.netns("r1")], str(tmp_path),
                                timing=True, speed=2.0)
    assert [(c["exit"], c["replayed"], c["errors"]) for c in summary["copies"]] == \
        [(0, 5, 0), (0, 5, 0)]
    with open(tmp_path / "copy-1.jsonl") as handle:
        results = [json.loads(line) for line in handle]
    assert {r["mode"] for r in results} == {"raw"}
    assert [r["answers"] for r in results] == [["Z290IDMw"]] * 5     # b"got 30"
    received = sorted(bytes.fromhex(line) for line in sink_log.read_text().split())
    assert received == sorted([s.payload for s in sessions] * 2)    # whole, in order


def wait_port(address: str, port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection((address, port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{address}:{port} never listened"
            time.sleep(0.05)
