"""``elbctl backend add|remove|drain --target haproxy`` against a real HAProxy in a lab.

Twenty concurrent ``backend add`` processes lose nothing (the target's lock serialises
record + plan + apply, each a runtime API change or a reload when the slots run out), a
full ``elbctl apply`` of the model afterwards keeps them (the registry is merged into
every plan), and ``remove`` drains, reports that the server is idle and takes it out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest
import yaml

from dcnet.backendfile import BackendFile
from dcnet.haproxy.backend import HAProxyTarget
from dcnet.haproxy.paths import Paths
from dcnet.lab import haproxy_lab as hlab

pytestmark = pytest.mark.netns

RS1 = hlab.server_address(1)
BACKEND = f"{hlab.JOB}:{hlab.SERVICE_PORT}"
ADDED = [f"10.252.1.{i}" for i in range(1, 21)]


def elbctl(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dcnet.cli.elbctl", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)


def run(*args: str, env: dict) -> tuple[int, str]:
    popen = elbctl(*args, env=env)
    output, _ = popen.communicate(timeout=300)
    return popen.returncode, output


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix="dcnet-backend-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def director(lab_factory, workdir):
    """HAProxy serving one service over rs1; yields (paths, model file, env)."""
    lab = lab_factory(hlab.topology(1))
    paths = Paths(run_dir=f"{workdir}/run")
    data = hlab.model_data({RS1: 10})
    hlab.start_haproxy(lab, hlab.model_of(data), paths)
    model_file = os.path.join(workdir, "model.yaml")
    with open(model_file, "w") as handle:
        yaml.safe_dump(data, handle)
    env = {**os.environ, "DCNET_HAPROXY_RUN_DIR": paths.run_dir}
    return paths, model_file, env


def members(paths: Paths) -> set[str]:
    target = HAProxyTarget(run_dir=paths.run_dir, log=lambda text: None)
    return {r.address for r in target.runtime.servers(BACKEND) if not r.free}


def test_backend_needs_an_applied_model_and_a_target_with_a_registry(director):
    paths, _, env = director
    code, output = run("backend", "add", hlab.JOB, ADDED[0], "--target", "haproxy", env=env)
    assert code == 1 and "no applied model recorded" in output, output
    assert not BackendFile(paths.run_dir, "haproxy").registry()
    code, output = run("backend", "add", hlab.JOB, ADDED[0], "--target", "dns",
                       "--dns-dir", paths.run_dir, env=env)
    assert code == 1 and "keeps no backend registry" in output, output


def test_concurrent_adds_lose_nothing_and_a_full_apply_keeps_them(director):
    paths, model_file, env = director
    code, output = run("apply", "-f", model_file, "--target", "haproxy", env=env)
    assert code == 0, output
    runs = [elbctl("backend", "add", hlab.JOB, address, "--weight", "5", "--target",
                   "haproxy", env=env) for address in ADDED]
    for popen in runs:
        output, _ = popen.communicate(timeout=600)
        assert popen.returncode == 0, output
    assert members(paths) == {RS1, *ADDED}
    recorded = BackendFile(paths.run_dir, "haproxy").registry()[hlab.JOB]
    assert recorded == {a: {"weight": 5, "state": "active"} for a in ADDED}
    code, output = run("apply", "-f", model_file, "--target", "haproxy", env=env)
    assert code == 0, output
    assert members(paths) == {RS1, *ADDED}
    code, output = run("plan", "-f", model_file, "--target", "haproxy",
                       "--detailed-exitcode", env=env)
    assert code == 0, output
    # remove: drained (no session: idle at once), then taken out, and it stays out
    code, output = run("backend", "remove", hlab.JOB, ADDED[3], "--target", "haproxy",
                       env=env)
    assert code == 0, output
    assert "no session left" in output and "safe to stop the server" in output, output
    assert members(paths) == {RS1, *ADDED} - {ADDED[3]}
    code, output = run("apply", "-f", model_file, "--target", "haproxy", env=env)
    assert code == 0, output
    assert members(paths) == {RS1, *ADDED} - {ADDED[3]}
    # removing a model server records it as removed; a full apply keeps it out
    code, output = run("backend", "remove", hlab.JOB, RS1, "--target", "haproxy", env=env)
    assert code == 0, output
    code, output = run("apply", "-f", model_file, "--target", "haproxy", env=env)
    assert code == 0, output
    assert RS1 not in members(paths)
    assert BackendFile(paths.run_dir, "haproxy").registry()[hlab.JOB][RS1]["state"] == \
        "removed"
    # removing a server nobody runs changes nothing (no transient add in drain state)
    before = members(paths)
    code, output = run("backend", "remove", hlab.JOB, "10.252.9.9", "--target", "haproxy",
                       env=env)
    assert code == 0 and "nothing to do" in output, output
    assert members(paths) == before
    assert "10.252.9.9" not in BackendFile(paths.run_dir, "haproxy").registry()[hlab.JOB]
