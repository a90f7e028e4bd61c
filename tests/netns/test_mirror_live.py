"""Netns test of live replay (issue #19): ``elbctl mirror live`` captures the director's
copies in the mirror namespace and sends every session, as it is reassembled, to a test
server from a source pool made for the run (one namespace per copy), at x1 and x2; the
test server logs every production request once per copy, in order within each session,
from the copy's own address (the x2 run and the director's rules are configured by the
model's mirror section, ``-f``); at packet level nothing of a copy or its answers reaches
the production client or server, and nothing of the pool is left. Also: replay to a VIP
of the nft target through a director, rather than to a server's address."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner
from scapy.layers.inet import IP, TCP

from dcnet.cli.elbctl import cli
from dcnet.lab.mirror_service import http_sessions, read_log
from dcnet.mirror import rules
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
CLIENT, DIRECTOR_C, DIRECTOR_S, SERVER = "10.93.0.1", "10.93.0.254", "10.93.1.254", "10.93.1.2"
MIRROR_D, MIRROR = "10.93.9.1", "10.93.9.2"
TARGET, POOL = "10.94.0.254", "10.94.0.0/24"
PORT = 8080
SESSIONS, REQUESTS = 8, 3


def topology(log_dir: str) -> dict:
    serve = [PY, "-m", "dcnet.lab.mirror_service", "--port", str(PORT), "--log"]
    return {
        "hosts": ["client", {"name": "director", "sysctls": {"net.ipv4.ip_forward": 1}},
                  "server", "mirror", "target", "sw"],
        "bridges": [{"name": "br0", "host": "sw"}],
        "links": [
            {"a": {"host": "client", "ifname": "eth0", "addresses": [f"{CLIENT}/24"]},
             "b": {"host": "director", "ifname": "c0", "addresses": [f"{DIRECTOR_C}/24"]}},
            {"a": {"host": "director", "ifname": "s0", "addresses": [f"{DIRECTOR_S}/24"]},
             "b": {"host": "server", "ifname": "eth0", "addresses": [f"{SERVER}/24"]}},
            {"a": {"host": "director", "ifname": "mir0", "addresses": [f"{MIRROR_D}/30"]},
             "b": {"host": "mirror", "ifname": "eth0", "addresses": [f"{MIRROR}/30"]}},
            {"a": {"host": "target", "ifname": "eth0", "addresses": [f"{TARGET}/24"]},
             "b": {"host": "sw", "ifname": "p-t", "bridge": "br0"}}],
        "routes": [{"host": "client", "dst": "default", "via": DIRECTOR_C},
                   {"host": "server", "dst": "default", "via": DIRECTOR_S}],
        "processes": [
            {"name": "prod", "host": "server", "argv": [*serve, f"{log_dir}/prod.log"],
             "ready_tcp_port": PORT},
            {"name": "target", "host": "target", "argv": [*serve, f"{log_dir}/target.log"],
             "ready_tcp_port": PORT}],
    }


MODEL = """version: 1
carriers:
  - {name: lab, uplink: c0, gateway: 10.93.0.254, table: 101, vip_ranges: [10.93.1.0/24],
     default: true}
services:
  - job: job.web_service.shop_cluster.prod_pdl.retail_owt.sre_cop.example
    vips: {lab: %(server)s}
    ports: [{port: %(port)d, forward: nat}]
    real_servers: [{address: 10.93.1.3}]
mirror:
  services: ["%(server)s:%(port)d"]
  device: mir0
  to: %(mirror)s
  target: %(target)s:%(port)d
  factor: 2
  pool: {network: %(pool)s, via: br0, via_netns: %(sw)s}
"""


def test_live_replay_copies_every_production_request_and_never_touches_production(
        lab_factory, tmp_path):
    lab = lab_factory(topology(str(tmp_path)))
    model = tmp_path / "model.yaml"         # the x2 run and the rules come from the model
    model.write_text(MODEL % {"server": SERVER, "port": PORT, "mirror": MIRROR,
                              "target": TARGET, "pool": POOL, "sw": lab.netns("sw")})
    done = CliRunner().invoke(cli, ["mirror", "rules", "-f", str(model), "--apply",
                                    "--netns", lab.netns("director")])
    assert done.exit_code == 0, done.output
    assert rules.counters(lab.netns("director"))["copied"] == 0
    target_log, prod_log = str(tmp_path / "target.log"), str(tmp_path / "prod.log")
    delivered = 0
    for factor, copies in ((1, 1), (2, 2)):
        out = tmp_path / f"x{factor}"
        where = ["--target", f"{TARGET}:{PORT}", "--factor", str(factor), "--pool", POOL,
                 "--via", "br0", "--via-netns", lab.netns("sw")] if factor == 1 else \
            ["-f", str(model)]
        command = subprocess.Popen(
            [PY, "-m", "dcnet.cli.elbctl", "mirror", "live", "--capture-netns",
             lab.netns("mirror"), "--ifname", "eth0", *where, "--out-dir", str(out),
             "--record", str(out / "rec.jsonl")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_until(lambda out=out, command=command: os.path.exists(out / "rec.jsonl")
                       or command.poll() is not None, "live replay never started")
            assert command.poll() is None, command.communicate()[1].decode()
            client_side, server_side = Capture(lab, "client"), Capture(lab, "server")
            sent = lab.call("client", http_sessions, SERVER, PORT, SESSIONS, REQUESTS,
                            f"x{factor}-")
            # the copies are sent while the capture runs: wait for the target's log
            wanted = delivered + copies * SESSIONS * REQUESTS
            wait_until(lambda wanted=wanted: lines_of(target_log) >= wanted,
                       "the copies never reached the target")
            command.send_signal(signal.SIGTERM)
            stdout, stderr = command.communicate(timeout=60)
        finally:
            stop(command)
        assert command.returncode == 0, stderr.decode()
        summary = json.loads(stdout)
        assert summary["sessions"] == SESSIONS and summary["kernel_drops"] == 0
        assert [(c["exit"], c["sessions"], c["shed"], c["replayed"], c["errors"])
                for c in summary["copies"]] == [(0, SESSIONS, 0, SESSIONS, 0)] * copies
        entries = read_log(target_log)[delivered:]
        delivered += len(entries)
        assert len(entries) == copies * SESSIONS * REQUESTS       # no duplicate
        wanted_paths = sorted(p for data in sent.values() for p in paths_of(data))
        by_copy = copies_of(entries, wanted_paths)   # all, once, per-session order
        assert len(by_copy) == copies                # each copy from its own address
        assert all(source.startswith("10.94.0.") for source in by_copy)
        # production: only the client and the server, at packet level, both sides
        for side in (client_side.finish(), server_side.finish()):
            assert side, "the capture saw nothing"
            assert {(p[IP].src, p[IP].dst) for p in side} <= \
                {(CLIENT, SERVER), (SERVER, CLIENT)}
        syns = [IP(p) for p in server_side.packets if TCP in IP(p) and IP(p)[TCP].flags == "S"]
        # no copy's SYN reached production (connections, not SYNs: one may be retransmitted)
        assert len({(p.src, p[TCP].sport) for p in syns}) == SESSIONS
        assert pool_left(stderr) == []
    assert len(read_log(prod_log)) == 2 * SESSIONS * REQUESTS   # production's own only


VIP, VIP_PORT, DIRECTOR_POOL = "198.51.100.10", 80, "10.96.0.254"
REAL_SERVERS = ("10.97.0.11", "10.97.0.12")


def vip_topology(log_dir: str) -> dict:
    """Copies (a pool on br0, gateway the director) -> the director (nft target, the VIP
    on lo, DNAT to the real servers) -> rs1, rs2 on br1 (default route: the director)."""
    serve = [PY, "-m", "dcnet.lab.mirror_service", "--port", str(PORT), "--log"]
    links = [
        {"a": {"host": "director", "ifname": "eth0", "addresses": [f"{DIRECTOR_POOL}/24"]},
         "b": {"host": "sw", "ifname": "p-d", "bridge": "br0"}},
        {"a": {"host": "director", "ifname": "s0", "addresses": ["10.97.0.254/24"]},
         "b": {"host": "sw", "ifname": "p-s", "bridge": "br1"}}]
    processes, routes = [], []
    for i, address in enumerate(REAL_SERVERS, start=1):
        links.append({"a": {"host": f"rs{i}", "ifname": "eth0", "addresses": [f"{address}/24"]},
                      "b": {"host": "sw", "ifname": f"p-rs{i}", "bridge": "br1"}})
        routes.append({"host": f"rs{i}", "dst": "default", "via": "10.97.0.254"})
        processes.append({"name": f"rs{i}", "host": f"rs{i}", "ready_tcp_port": PORT,
                          "argv": [*serve, f"{log_dir}/rs{i}.log"]})
    return {"hosts": [{"name": "director", "sysctls": {"net.ipv4.ip_forward": 1}}, "sw",
                      "rs1", "rs2"],
            "bridges": [{"name": "br0", "host": "sw"}, {"name": "br1", "host": "sw"}],
            "links": links, "routes": routes, "processes": processes}


def test_replay_to_a_vip_behind_the_nft_target(lab_factory, tmp_path):
    """The replay target is a VIP: the copies (pool with the director as gateway) reach
    it through the nft target's DNAT; the real servers together log every request once
    per copy, from the copies' own addresses, in order within each session."""
    from dcnet.lab.mirror_service import request_bytes
    from dcnet.mirror import recording
    from dcnet.nft import synth
    from dcnet.target import session as target_session

    lab = lab_factory(vip_topology(str(tmp_path)))
    lab.run("director", ["ip", "addr", "add", f"{VIP}/32", "dev", "lo"])
    text = synth.lab_model_text(VIP, dict.fromkeys(REAL_SERVERS, 1), scheduler="rr",
                                port=VIP_PORT, target_port=PORT) + (
        f"mirror:\n  services: ['{VIP}:{VIP_PORT}']\n  device: mir0\n  to: 10.93.9.2\n"
        f"  target: {VIP}:{VIP_PORT}\n  factor: 2\n  pool: {{network: 10.96.0.0/24, "
        f"via: br0, via_netns: {lab.netns('sw')}, gateway: {DIRECTOR_POOL}}}\n")
    model_path = tmp_path / "model.yaml"      # the replay's settings come from the model
    model_path.write_text(text)
    model = synth.model(text)
    outcome = target_session.run("nft", model, {"netns": lab.netns("director"),
                                                "state_dir": str(tmp_path / "state")},
                                 apply=True)
    assert outcome.ok, outcome.result.to_text()
    sessions = [recording.Session(
        f"v{i}", f"10.1.0.1:{42000 + i}", f"{VIP}:{VIP_PORT}", 0.0,
        chunks=tuple(recording.Chunk(r * 100, r / 100, request_bytes(VIP, f"/v{i}/r{r}"))
                     for r in range(REQUESTS))) for i in range(SESSIONS)]
    rec = str(tmp_path / "vip.jsonl")
    recording.write(rec, sessions)
    done = CliRunner().invoke(cli, [
        "mirror", "replay", "-f", str(model_path), "--recording", rec,
        "--out-dir", str(tmp_path / "out")])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert [(c["exit"], c["replayed"], c["errors"]) for c in summary["copies"]] == \
        [(0, SESSIONS, 0)] * 2
    entries = [e for i in (1, 2) for e in read_log(str(tmp_path / f"rs{i}.log"))]
    assert len(entries) == 2 * SESSIONS * REQUESTS
    by_copy: dict[str, list[str]] = {}
    for entry in entries:
        by_copy.setdefault(entry["src"].rpartition(":")[0], []).append(entry["path"])
    assert sorted(by_copy) == ["10.96.0.1", "10.96.0.2"]    # DNAT keeps the copy's source
    wanted = sorted(f"/v{i}/r{r}" for i in range(SESSIONS) for r in range(REQUESTS))
    for source, paths in by_copy.items():
        assert sorted(paths) == wanted, source
    # one connection a session: all its requests on one real server, in order
    servers: dict[tuple[str, str], set[int]] = {}
    for i in (1, 2):
        for entry in read_log(str(tmp_path / f"rs{i}.log")):
            key = (entry["src"].rpartition(":")[0], entry["path"].split("/")[1])
            servers.setdefault(key, set()).add(i)
        for paths in _paths_by_connection(read_log(str(tmp_path / f"rs{i}.log"))).values():
            assert paths == sorted(paths)
    assert len(servers) == 2 * SESSIONS and all(len(s) == 1 for s in servers.values())
    assert {i for s in servers.values() for i in s} == {1, 2}     # rr: both servers used


def _paths_by_connection(entries: list[dict]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for entry in entries:
        out.setdefault(entry["src"], []).append(entry["path"])
    return out
