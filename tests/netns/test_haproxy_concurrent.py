"""Concurrent ``elbctl apply --target haproxy`` runs against one real HAProxy.

Four ``elbctl apply`` processes with four different models (runtime and reload
differences mixed) start together, five rounds in a row. The target's lock serialises
them, so after each round HAProxy must equal exactly one of the four models: ``elbctl
plan --detailed-exitcode`` of that model exits 0 (no changes) and of the others 2.
Before the lock, rounds ended matching none of them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest
import yaml

from dcnet.haproxy.backend import HAProxyTarget
from dcnet.haproxy.paths import Paths
from dcnet.lab import haproxy_lab as hlab
from dcnet.lab.haproxy_loadgen import one_request

pytestmark = pytest.mark.netns

RS1, RS2, RS3 = (hlab.server_address(i) for i in (1, 2, 3))
ROUNDS, RUNS = 5, 4


def model_data(i: int) -> dict:
    """Model ``i``: its own weights and members (runtime changes), and for odd ``i`` a
    longer client timeout (a reload)."""
    servers = {RS1: 10 + i}
    if i % 2:
        servers[RS2] = 5 * i
    if i >= 2:
        servers[RS3] = 0 if i == 2 else 7
    return hlab.model_data(servers, services=2, timeout_client=60 + i % 2)


def elbctl(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dcnet.cli.elbctl", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix="dcnet-hap-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_concurrent_applies_leave_haproxy_equal_to_one_of_the_models(lab_factory, workdir):
    lab = lab_factory(hlab.topology(3))
    paths = Paths(run_dir=f"{workdir}/run")
    hlab.start_haproxy(lab, hlab.model_of(model_data(0)), paths)
    files = []
    for i in range(RUNS):
        files.append(os.path.join(workdir, f"model{i}.yaml"))
        with open(files[-1], "w") as handle:
            yaml.safe_dump(model_data(i), handle)
    env = {**os.environ, "DCNET_HAPROXY_RUN_DIR": paths.run_dir}
    order = [3, 1, 2, 0]
    winners = []
    for round_ in range(ROUNDS):
        runs = [elbctl("apply", "-f", files[i], "--target", "haproxy", env=env)
                for i in order]
        for popen in runs:
            output, _ = popen.communicate(timeout=600)
            assert popen.returncode == 0, output
        codes = []
        for path in files:
            popen = elbctl("plan", "-f", path, "--target", "haproxy",
                           "--haproxy-run-dir", paths.run_dir, "--detailed-exitcode",
                           env=os.environ)
            output, _ = popen.communicate(timeout=600)
            assert popen.returncode in (0, 2), output
            codes.append(popen.returncode)
        assert codes.count(0) == 1, f"round {round_}: plans exit {codes}"
        winners.append(codes.index(0))
        order = order[1:] + order[:1]
        assert lab.call("client", one_request, hlab.LB_ADDRESS, hlab.SERVICE_PORT,
                        3.0) is None
    target = HAProxyTarget(run_dir=paths.run_dir)
    assert target.plan(hlab.model_of(model_data(winners[-1]), files[winners[-1]])).empty
    print(f"models HAProxy ended equal to, by round: {winners}")
