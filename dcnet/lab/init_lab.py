"""A rolling restart of app instances under dcnet-init behind HAProxy (lab only).

``rolling_restart(lab, workdir, instances=3, hooks=True)``: HAProxy in ``lb`` in front of
``instances`` keep-alive HTTP servers (bench/haproxy_peers.py), each run under
``dcnet-init`` in its own namespace with the ELB hooks (``elbctl backend add`` when
healthy, ``drain`` on SIGTERM, ``remove`` after the app exited); a keep-alive client and
a new-connection load generator run the whole time; every instance is stopped (SIGTERM
to its init) and a new one started, one after the other, while another thread runs full
``elbctl apply`` of the model in a loop. With ``hooks=False`` the instances run without
hooks and are stopped by killing the app directly (the contrast). Before the load starts
the lab is in a steady state: links forwarding (:func:`wait_network`), every app
listening before HAProxy starts, every server UP in HAProxy (:func:`wait_all_up`). Used by
tests/netns/test_init_elb.py and bench/init_rolling.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import yaml

from dcnet.haproxy.drain import parse_stat
from dcnet.haproxy.paths import Paths
from dcnet.haproxy.runtime import Runtime
from dcnet.lab import haproxy_lab as hlab

PEERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench",
                     "haproxy_peers.py")
APP_PORT = 8081
BIN = os.path.dirname(sys.executable)


@dataclass
class RollingResult:
    keepalive: dict
    new_connections: dict
    per_instance: list[float] = field(default_factory=list)
    applies: int = 0
    apply_failures: list[str] = field(default_factory=list)
    final_plan_empty: bool = False

    @property
    def failed(self) -> int:
        return len(self.keepalive.get("failures", [])) + self.new_connections.get("failed", 0)


def model_data(instances: int, drain_deadline: int = 2) -> dict:
    data = hlab.model_data({hlab.server_address(i): 10 for i in range(1, instances + 1)},
                           drain_deadline=drain_deadline)
    port = data["services"][0]["ports"][0]
    port["target_port"] = APP_PORT
    port["mode"] = "http"
    return data


def _wait(predicate, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def wait_network(lab, instances: int, limit: float = 60.0) -> None:
    """Wait until ``lb`` reaches every real server and ``client`` reaches ``lb``.

    A lab is returned as soon as its links are set up, but the kernel tells the bridge
    that a veth has carrier from its link-watch work, up to a second later; until then
    the bridge drops the frames of that port. HAProxy started at once sends its first
    health checks into that hole: their SYNs (or ARP requests) are lost, every check
    times out (``Layer4 timeout``), and a server that has just started, or just left
    maintenance, is DOWN after one failed check and needs ``rise`` good ones to come
    back; with all of them DOWN at once the backend answers 503 (issue #17)."""
    pairs = [("lb", hlab.server_address(i)) for i in range(1, instances + 1)]
    pairs.append(("client", hlab.LB_ADDRESS))
    for host, address in pairs:
        _wait(lambda host=host, address=address: lab.run(
            host, ["ping", "-n", "-q", "-c1", "-W1", address], check=False).returncode == 0,
              f"{host} to reach {address}", limit)


def wait_all_up(paths: Paths, instances: int, limit: float = 60.0) -> None:
    """Wait until HAProxy's checks have every instance UP: the roll starts from a steady
    state. (A server HAProxy checked before its app listened is DOWN until ``rise`` good
    checks; with every server so, the backend answers 503: that is the start, not the
    roll.)"""
    runtime = Runtime(paths.admin_socket, paths.master_socket)

    def up() -> bool:
        rows = parse_stat(runtime.command("show stat -1 4 -1"))
        return sum(1 for r in rows if r.get("status") == "UP") >= instances

    _wait(up, f"{instances} servers UP in HAProxy", limit)


def _lines(path: str) -> int:
    try:
        with open(path) as handle:
            return sum(1 for _ in handle)
    except FileNotFoundError:
        return 0


class Instances:
    def __init__(self, lab, workdir: str, paths: Paths, hooks: bool):
        self.lab, self.workdir, self.paths, self.hooks = lab, workdir, paths, hooks
        self.generation: dict[int, int] = {}
        self.procs: dict[int, subprocess.Popen] = {}

    def log(self, i: int) -> str:
        return os.path.join(self.workdir, f"rs{i}.log")

    def start(self, i: int) -> subprocess.Popen:
        gen = self.generation.get(i, 0) + 1
        self.generation[i] = gen
        address = hlab.server_address(i)
        app = [sys.executable, PEERS, "server", str(APP_PORT), address, self.log(i)]
        if self.hooks:
            argv = [os.path.join(BIN, "dcnet-init"), "--check", f"tcp:{address}:{APP_PORT}",
                    "--interval", "0.1", "--grace", "10", "--drain-deadline", "20",
                    "--elb-service", hlab.JOB, "--elb-server", address,
                    "--elbctl", os.path.join(BIN, "elbctl"), "--elb-arg=--target=haproxy",
                    f"--elb-arg=--haproxy-run-dir={self.paths.run_dir}", "--", *app]
        else:
            argv = app
        proc = self.lab.start(f"rs{i}", argv, name=f"rs{i}-app-{gen}")
        self.procs[i] = proc
        return proc

    def stop(self, i: int) -> None:
        proc = self.procs[i]
        proc.send_signal(signal.SIGTERM if self.hooks else signal.SIGKILL)
        proc.wait(60)


def rolling_restart(lab, workdir: str, instances: int = 3, hooks: bool = True,
                    settle: float = 1.0, concurrent_applies: bool = True) -> RollingResult:
    data = model_data(instances)
    paths = Paths(run_dir=f"{workdir}/run")
    model_file = os.path.join(workdir, "model.yaml")
    with open(model_file, "w") as handle:
        yaml.safe_dump(data, handle)
    env = {**os.environ, "DCNET_HAPROXY_RUN_DIR": paths.run_dir}
    elbctl = [os.path.join(BIN, "elbctl")]
    apps = Instances(lab, workdir, paths, hooks)
    wait_network(lab, instances)
    for i in range(1, instances + 1):
        apps.start(i)
    for i in range(1, instances + 1):       # the log is opened once the app listens
        _wait(lambda i=i: os.path.exists(apps.log(i)), f"instance {i}")
    hlab.start_haproxy(lab, hlab.model_of(data), paths)
    done = subprocess.run([*elbctl, "apply", "-f", model_file, "--target", "haproxy"],
                          env=env, capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise AssertionError(done.stdout + done.stderr)
    wait_all_up(paths, instances)
    target = f"{hlab.LB_ADDRESS}:{hlab.SERVICE_PORT}"
    ka_out, ka_stop = os.path.join(workdir, "ka.json"), os.path.join(workdir, "ka.stop")
    keepalive = lab.start("client", [sys.executable, PEERS, "client", target, ka_out, ka_stop,
                                     "--connections", "4", "--interval", "0.01"],
                          name="keepalive")
    load = hlab.LoadRun(lab, workdir, target, concurrency=2, name="newconn")
    _wait(lambda: all(_lines(apps.log(i)) > 10 for i in range(1, instances + 1)),
          "every instance serving")
    result = RollingResult({}, {})
    stop_applying = threading.Event()

    def apply_loop() -> None:
        while not stop_applying.is_set():
            run = subprocess.run([*elbctl, "apply", "-f", model_file, "--target", "haproxy"],
                                 env=env, capture_output=True, text=True, timeout=120)
            result.applies += 1
            if run.returncode:
                result.apply_failures.append(run.stdout[-500:] + run.stderr[-500:])
            stop_applying.wait(0.3)

    applier = threading.Thread(target=apply_loop, daemon=True)
    if concurrent_applies:
        applier.start()
    try:
        for i in range(1, instances + 1):
            started = time.monotonic()
            apps.stop(i)
            apps.start(i)
            base = _lines(apps.log(i))
            _wait(lambda i=i, base=base: _lines(apps.log(i)) > base + 10,
                  f"new instance {i} serving")
            result.per_instance.append(time.monotonic() - started)
            time.sleep(settle)
    finally:
        stop_applying.set()
        if concurrent_applies:
            applier.join(130)
    with open(ka_stop, "w") as handle:
        handle.write("stop\n")
    keepalive.wait(30)
    with open(ka_out) as handle:
        result.keepalive = json.load(handle)
    result.new_connections = load.stop()
    plan = subprocess.run([*elbctl, "plan", "-f", model_file, "--target", "haproxy",
                           "--detailed-exitcode"], env=env, capture_output=True, text=True,
                          timeout=120)
    result.final_plan_empty = plan.returncode == 0
    return result
