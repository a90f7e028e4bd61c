"""A server removed by a reload (not the runtime API) is drained too (issue 14).

When a full ``elbctl apply`` takes a whole service (its backend) out, its servers go with
the file: the reload starts a worker without them, and the old worker keeps the
connections it has. In TCP mode a keep-alive connection would stay on the removed server
until ``hard-stop-after`` (30 s here). The apply waits for those connections in the old
workers like a runtime removal (:func:`dcnet.haproxy.drain.drain_reloaded`): up to
``drain_deadline`` (2 s), then shuts them down, so once the apply returned the removed
server gets no request and the old worker exits long before ``hard-stop-after``.

Service 0 (port 80) runs on rs1, service 1 (port 81) on rs2, both keep-alive servers
(bench/haproxy_peers.py); the client holds persistent connections to port 81.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest
import yaml

from dcnet.haproxy.paths import Paths
from dcnet.haproxy.runtime import Runtime
from dcnet.lab import haproxy_lab as hlab
from dcnet.lab.init_lab import wait_all_up, wait_network
from tests.netns.test_haproxy_drain import count, wait_for

pytestmark = pytest.mark.netns

PEERS = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "haproxy_peers.py")
RS1, RS2 = hlab.server_address(1), hlab.server_address(2)
PORT = 8081


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix="dcnet-drain-reload-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def model_data(mode: str | None, services: int) -> dict:
    data = hlab.model_data({RS1: 10}, services=services, drain_deadline=2)
    for n, service in enumerate(data["services"]):
        service["ports"][0]["target_port"] = PORT
        if mode:
            service["ports"][0]["mode"] = mode
        service["real_servers"] = [{"address": RS1 if n == 0 else RS2, "weight": 10}]
    return data


def apply(model_file: str, data: dict, env: dict) -> str:
    with open(model_file, "w") as handle:
        yaml.safe_dump(data, handle)
    done = subprocess.run([sys.executable, "-m", "dcnet.cli.elbctl", "apply", "-f",
                           model_file, "--target", "haproxy"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.mark.parametrize("mode", [None, "http"])
def test_a_service_removed_by_a_reload_is_drained_within_the_deadline(lab_factory, workdir,
                                                                     mode):
    lab = lab_factory(hlab.topology(2))
    wait_network(lab, 2)
    logs = {}
    for i, address in ((1, RS1), (2, RS2)):
        logs[address] = os.path.join(workdir, f"rs{i}.log")
        open(logs[address], "w").close()
        lab.start(f"rs{i}", [sys.executable, PEERS, "server", str(PORT), address,
                             logs[address]], name=f"rs{i}-keepalive")
    data = model_data(mode, services=2)
    paths = Paths(run_dir=f"{workdir}/run")
    hlab.start_haproxy(lab, hlab.model_of(data), paths)
    env = {**os.environ, "DCNET_HAPROXY_RUN_DIR": paths.run_dir}
    model_file = os.path.join(workdir, "model.yaml")
    apply(model_file, data, env)
    wait_all_up(paths, 2)
    out, stop = os.path.join(workdir, "client.json"), os.path.join(workdir, "client.stop")
    client = lab.start("client", [sys.executable, PEERS, "client",
                                  f"{hlab.LB_ADDRESS}:{hlab.SERVICE_PORT + 1}", out, stop,
                                  "--connections", "4", "--interval", "0.01"], name="client")
    wait_for(lambda: count(logs[RS2]) > 20, "service 1 (rs2) serving the client")

    output = apply(model_file, model_data(mode, services=1), env)   # service 1 goes
    after = count(logs[RS2])
    assert "by the reload" in output, output
    runtime = Runtime(paths.admin_socket, paths.master_socket)
    # the old worker has nothing left to finish: it exits (the limit only bounds the
    # wait; hard-stop-after is 30 s)
    wait_for(lambda: not runtime.proc().old_workers, "the old worker to exit", 60)
    assert count(logs[RS2]) == after, "the removed server got requests after the apply"
    with open(stop, "w") as handle:
        handle.write("stop\n")
    client.wait(30)
    if mode is None:
        assert "deadline passed" in output and "session(s) shut down" in output, output
