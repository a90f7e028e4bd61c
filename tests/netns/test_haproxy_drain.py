"""Removal and drain that finish, under keep-alive clients (issue 14).

Real servers are HTTP/1.1 keep-alive servers (bench/haproxy_peers.py) that log every
request; a client in the client namespace keeps persistent connections open. After
``elbctl backend remove`` returns, the removed server gets no more requests: counted on
the server, while the client goes on until the remaining server answered 100 more.
In TCP mode a connection stays on its server, so the drain runs to ``drain_deadline``
and ends with ``shutdown sessions`` (the command says so). A full ``elbctl apply`` whose
model no longer lists a server removes it the same way (drain, wait, shut down, then
maintenance). The lab waits until its links forward before HAProxy starts
(``init_lab.wait_network``), so HAProxy's first checks are not lost.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

from dcnet.haproxy.paths import Paths
from dcnet.lab import haproxy_lab as hlab
from dcnet.lab.init_lab import wait_all_up, wait_network

pytestmark = pytest.mark.netns

PEERS = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "haproxy_peers.py")
RS1, RS2 = hlab.server_address(1), hlab.server_address(2)
PORT = 8081          # the peers' keep-alive servers (the lab's own listen on 8080)


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix="dcnet-drain-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def model_data(mode: str | None) -> dict:
    data = hlab.model_data({RS1: 10, RS2: 10}, drain_deadline=2)
    port = data["services"][0]["ports"][0]
    port["target_port"] = PORT
    if mode:
        port["mode"] = mode
    return data


def count(path: str) -> int:
    with open(path) as handle:
        return sum(1 for _ in handle)


def wait_for(predicate, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def removal_under_keepalive(lab_factory, workdir: str, mode: str | None,
                            reload_first: bool = False, by_apply: bool = False) -> str:
    """``by_apply``: a full ``elbctl apply`` of the model without rs2 removes it, and rs2's
    server is killed as soon as the apply returned (the client must lose nothing in HTTP
    mode)."""
    lab = lab_factory(hlab.topology(2))
    wait_network(lab, 2)
    logs, servers = {}, {}
    for i, address in ((1, RS1), (2, RS2)):
        logs[address] = os.path.join(workdir, f"rs{i}.log")
        open(logs[address], "w").close()
        servers[address] = lab.start(f"rs{i}", [sys.executable, PEERS, "server", str(PORT),
                                                address, logs[address]],
                                     name=f"rs{i}-keepalive")
    data = model_data(mode)
    paths = Paths(run_dir=f"{workdir}/run")
    hlab.start_haproxy(lab, hlab.model_of(data), paths)
    model_file = os.path.join(workdir, "model.yaml")
    with open(model_file, "w") as handle:
        yaml.safe_dump(data, handle)
    env = {**os.environ, "DCNET_HAPROXY_RUN_DIR": paths.run_dir}
    elbctl = [sys.executable, "-m", "dcnet.cli.elbctl"]
    done = subprocess.run([*elbctl, "apply", "-f", model_file, "--target", "haproxy"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    # both UP before the client connects: in TCP mode a connection made while rs2 was
    # still DOWN (HAProxy checked it before it listened) stays on rs1 for good
    wait_all_up(paths, 2)
    out, stop = os.path.join(workdir, "client.json"), os.path.join(workdir, "client.stop")
    client = lab.start("client", [sys.executable, PEERS, "client",
                                  f"{hlab.LB_ADDRESS}:{hlab.SERVICE_PORT}", out, stop,
                                  "--connections", "4", "--interval", "0.01"], name="client")
    wait_for(lambda: count(logs[RS1]) > 20 and count(logs[RS2]) > 20, "both servers serving")
    if reload_first:        # the old worker keeps the keep-alive connections (TCP mode)
        from dcnet.haproxy.runtime import Runtime

        runtime = Runtime(paths.admin_socket, paths.master_socket)
        runtime.reload()
        assert runtime.proc().old_workers
    start = time.time()
    if by_apply:
        data["services"][0]["real_servers"] = [{"address": RS1, "weight": 10}]
        with open(model_file, "w") as handle:
            yaml.safe_dump(data, handle)
        done = subprocess.run([*elbctl, "apply", "-f", model_file, "--target", "haproxy"],
                              env=env, capture_output=True, text=True, timeout=120)
    else:
        done = subprocess.run([*elbctl, "backend", "remove", hlab.JOB, RS2, "--target",
                               "haproxy"], env=env, capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    after = count(logs[RS2])
    if by_apply and mode == "http":
        servers[RS2].kill()         # stopped at once: it was drained before it was removed
    base = count(logs[RS1])
    wait_for(lambda: count(logs[RS1]) >= base + 100, "100 more requests on rs1")
    assert count(logs[RS2]) == after, "the removed server got requests after remove returned"
    with open(stop, "w") as handle:
        handle.write("stop\n")
    client.wait(30)
    with open(out) as handle:
        result = json.load(handle)
    assert result["ok"] > 0
    if by_apply and mode == "http":
        failed = [f for f in result["failures"] if f[0] >= start]
        assert failed == [], failed[:5]
    return done.stdout + done.stderr


def test_tcp_mode_remove_shuts_keepalive_sessions_down_at_the_deadline(lab_factory, workdir):
    output = removal_under_keepalive(lab_factory, workdir, None)
    assert "deadline passed" in output and "session(s) shut down" in output, output


def test_http_mode_remove_is_idle_at_once_and_the_server_gets_no_more_requests(
        lab_factory, workdir):
    # each request is balanced on its own: the drained server finishes what it has
    output = removal_under_keepalive(lab_factory, workdir, "http")
    assert "no session left" in output and "safe to stop the server" in output, output


def test_http_mode_reload_closes_keepalive_clients_gracefully(lab_factory, workdir):
    """The old worker answers its keep-alive clients with Connection: close and exits
    long before hard-stop-after; no request fails."""
    from dcnet.haproxy.runtime import Runtime

    lab = lab_factory(hlab.topology(1))
    log = os.path.join(workdir, "rs1.log")
    lab.start("rs1", [sys.executable, PEERS, "server", str(PORT), RS1, log], name="ka")
    data = model_data("http")
    data["haproxy"]["hard_stop_after"] = 600
    data["services"][0]["real_servers"] = [{"address": RS1, "weight": 10}]
    paths = Paths(run_dir=f"{workdir}/run")
    hlab.start_haproxy(lab, hlab.model_of(data), paths)
    out, stop = os.path.join(workdir, "client.json"), os.path.join(workdir, "client.stop")
    client = lab.start("client", [sys.executable, PEERS, "client",
                                  f"{hlab.LB_ADDRESS}:{hlab.SERVICE_PORT}", out, stop,
                                  "--connections", "4", "--interval", "0.01"], name="client")
    wait_for(lambda: os.path.exists(log) and count(log) > 20, "the client being served")
    runtime = Runtime(paths.admin_socket, paths.master_socket)
    # the real server may start after HAProxy's first checks: wait until it is UP, and
    # count only failures from the first reload on
    wait_for(lambda: "UP" in runtime.command("show stat -1 4 -1"), "rs1 UP")
    start = time.time()
    for _ in range(3):
        runtime.reload()
        # gone well before hard-stop-after (600 s): the give-up limit is 60 s
        wait_for(lambda: not runtime.proc().old_workers, "the old worker to exit", 60)
    base = count(log)
    wait_for(lambda: count(log) >= base + 100, "100 more requests")
    with open(stop, "w") as handle:
        handle.write("stop\n")
    client.wait(30)
    with open(out) as handle:
        result = json.load(handle)
    failed = [f for f in result["failures"] if f[0] >= start]
    assert result["ok"] > 100 and failed == [], failed[:5]


def test_tcp_mode_remove_after_a_reload_also_ends_the_old_workers_sessions(lab_factory,
                                                                          workdir):
    output = removal_under_keepalive(lab_factory, workdir, None, reload_first=True)
    assert "deadline passed" in output and "(old worker" in output, output


def test_http_mode_full_apply_drains_a_removed_server_before_taking_it_out(lab_factory,
                                                                          workdir):
    """A full apply whose model no longer lists rs2 drains it (no session left) before
    maintenance, so rs2 can be stopped the moment the apply returns: the keep-alive
    client loses no request and rs2 gets none after the apply."""
    output = removal_under_keepalive(lab_factory, workdir, "http", by_apply=True)
    assert "removal of 1 server(s): drained after" in output, output
    assert "no session left" in output, output


def test_tcp_mode_full_apply_ends_a_removed_servers_sessions_at_the_deadline(lab_factory,
                                                                            workdir):
    """In TCP mode a keep-alive connection stays on its server: the full apply's removal
    waits ``drain_deadline`` and shuts the sessions down, so the removed server gets no
    request after the apply returned (before, it went on serving those connections)."""
    output = removal_under_keepalive(lab_factory, workdir, None, by_apply=True)
    assert "deadline passed" in output and "session(s) shut down" in output, output
