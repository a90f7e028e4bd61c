"""The haproxy target over IPv6, with real traffic (dcnet.lab.haproxy6_lab): each carrier's
client reaches its IPv6 VIP and is balanced over IPv6 real servers, X-Forwarded-For
carries the IPv6 client address (mode http), IPv4 VIP -> IPv6 servers and IPv6 VIP ->
IPv4 servers, HTTP health checks over IPv6 take a dead server out, a second plan is
empty (addresses read back from HAProxy match the model's), and ``elbctl backend
add/remove --target haproxy`` of an IPv6 server (runtime API ``set server addr``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

from dcnet.haproxy.backend import HAProxyTarget
from dcnet.haproxy.paths import Paths
from dcnet.lab import haproxy6_lab as h6
from dcnet.lab import haproxy_lab as hlab
from dcnet.sysio import proc

pytestmark = pytest.mark.netns

BACKEND = f"{h6.JOB}:80"
RS6 = [h6.server6(i) for i in (1, 2, 3, 4)]
RS4 = [h6.server4(i) for i in (1, 2, 3, 4)]


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix="dcnet-hap6-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def running(lab_factory, workdir):
    """HAProxy serving web (rs1..rs3) and the mixed services; yields (lab, target, data,
    paths)."""
    lab = lab_factory(h6.topology(4))
    paths = Paths(run_dir=f"{workdir}/run")
    data = h6.model_data([1, 2, 3], mixed=True)
    hlab.start_haproxy(lab, hlab.model_of(data), paths)
    target = HAProxyTarget(run_dir=paths.run_dir, log=lambda text: None)
    return lab, target, data, paths


def answers(lab, host: str, address: str, port: int, n: int) -> list[tuple[str, str]]:
    """(server address, X-Forwarded-For) of n requests from host."""
    out = []
    for _ in range(n):
        _ok, server, xff = lab.call(host, h6.get, address, port).split()
        out.append((server, xff.removeprefix("xff=")))
    return out


def test_each_carriers_client_is_balanced_over_ipv6_servers_with_its_address_in_xff(running):
    lab, target, data, _ = running
    for carrier, (host, *_rest) in h6.CLIENTS.items():
        got = answers(lab, host, h6.VIP6[carrier], 80, 30)
        assert {server for server, _ in got} == set(RS6[:3])
        assert {xff for _, xff in got} == {h6.client_address(carrier)}
    assert target.plan(hlab.model_of(data)).empty        # read back == model (IPv6 text)


def test_proxying_across_families_both_ways(running):
    lab, *_ = running
    v4to6 = answers(lab, "client", h6.VIP4["telecom"], h6.SERVER_PORT, 12)
    assert {server for server, _ in v4to6} == set(RS6[:3])
    v6to4 = answers(lab, "client2", h6.VIP6_B["unicom"], h6.SERVER_PORT, 12)
    assert {server for server, _ in v6to4} == set(RS4[:3])


def test_http_health_checks_over_ipv6_take_a_dead_server_out(running):
    lab, target, _, _ = running
    proc.stop(lab.process("rs2-http"), 3.0)
    deadline = time.monotonic() + 60          # bounds the wait only (check inter 1 s)
    while True:
        rows = {r.address: r for r in target.runtime.servers(BACKEND)}
        if rows[RS6[1]].op_state == 0:
            break
        assert time.monotonic() < deadline, f"rs2 never marked down: {rows[RS6[1]]}"
        time.sleep(0.5)
    assert rows[RS6[0]].op_state == 2 and rows[RS6[2]].op_state == 2
    got = answers(lab, "client", h6.VIP6["telecom"], 80, 20)
    assert {server for server, _ in got} == {RS6[0], RS6[2]}


def elbctl(*args: str, env: dict) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "dcnet.cli.elbctl", *args], env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=300, check=False)
    return done.returncode, done.stdout + done.stderr


def test_elbctl_backend_add_and_remove_of_an_ipv6_server(running, workdir):
    lab, target, data, paths = running
    model_file = os.path.join(workdir, "model.yaml")
    with open(model_file, "w") as handle:
        yaml.safe_dump(data, handle)
    env = {**os.environ, "DCNET_HAPROXY_RUN_DIR": paths.run_dir}
    code, output = elbctl("apply", "-f", model_file, "--target", "haproxy", env=env)
    assert code == 0, output
    code, output = elbctl("backend", "add", h6.JOB, f"[{RS6[3]}]:{h6.SERVER_PORT}",
                          "--target", "haproxy", env=env)
    assert code == 0, output

    def members() -> set[str]:
        return {r.address for r in target.runtime.servers(BACKEND) if not r.free}

    assert members() == set(RS6)
    deadline = time.monotonic() + 60          # the new server's first check passes
    while not any(server == RS6[3] for server, _ in
                  answers(lab, "client", h6.VIP6["telecom"], 80, 8)):
        assert time.monotonic() < deadline, "rs4 never answered after backend add"
    # the registry identity is the text's form: ADDR and [ADDR]:PORT are two entries
    code, output = elbctl("backend", "remove", h6.JOB, f"[{RS6[3]}]:{h6.SERVER_PORT}",
                          "--target", "haproxy", env=env)
    assert code == 0, output
    assert members() == set(RS6[:3]), output
    got = answers(lab, "client", h6.VIP6["telecom"], 80, 20)
    assert RS6[3] not in {server for server, _ in got}
    code, output = elbctl("plan", "-f", model_file, "--target", "haproxy",
                          "--detailed-exitcode", env=env)
    assert code == 0, output
