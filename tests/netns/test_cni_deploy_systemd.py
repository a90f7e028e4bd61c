"""Netns test: dcnet-agent run as deploy/systemd/dcnet-agent.service runs it (issue 13,
deployment).

systemd is not PID 1 on the machines these tests run on (the test checks ``ps -p 1``),
so the unit's semantics are emulated, from the file: ``Environment=`` then
``EnvironmentFile=`` (its content supplied by the test, as an operator's
/etc/default/dcnet-agent would be), ``ExecStart=`` with ``%H`` and ``${VAR}`` expanded
as systemd expands them (one word each), and ``Restart=always`` with ``RestartSec=`` as a
supervising loop that starts the command again whenever it exits, however it exits. The
agent runs in the node's network namespace; pods are made through the installed shim.
A SIGKILL and a SIGTERM each end the agent; the loop restarts it, pods made before keep
working, new pods come up, and nothing went through the fallback.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import threading

import pytest

from tests.netns.test_cni_hostgw import (
    AGENT,
    Cluster,
    EchoServer,
    address_of,
    tcp_echo,
    underlay,
    wait_until,
)
from tests.netns.test_cni_private_mount import _record_fallbacks

pytestmark = pytest.mark.netns

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNIT = os.path.join(ROOT, "deploy", "systemd", "dcnet-agent.service")


def parse_unit(path: str) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file, each key with its values in order (keys repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    with open(path) as handle:
        for raw in handle:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), {})
                continue
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def exec_start(service: dict[str, list[str]], env_files: dict[str, str],
               host: str) -> list[str]:
    """ExecStart's argv as systemd builds it: Environment=, then EnvironmentFile= (a
    leading '-' makes a missing file fine; ``env_files`` maps its path to the content
    the test supplies), specifiers, ``${VAR}`` expanded inside a word."""
    env: dict[str, str] = {}
    for value in service.get("Environment", []):
        for assignment in shlex.split(value):
            key, _, val = assignment.partition("=")
            env[key] = val
    for value in service.get("EnvironmentFile", []):
        path = value.lstrip("-")
        if path not in env_files:
            assert value.startswith("-"), f"{path}: missing and not optional"
            continue
        for line in env_files[path].splitlines():
            if line.strip() and not line.startswith("#"):
                key, _, val = line.partition("=")
                env[key.strip()] = val.strip().strip('"')
    (command,) = service["ExecStart"]
    argv = []
    for word in shlex.split(command.replace("%H", host)):
        argv.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


class RestartAlways:
    """``Restart=always`` + ``RestartSec=``: start again whenever the process exits."""

    def __init__(self, node: Cluster, argv: list[str], restart_sec: float):
        self.node, self.argv, self.restart_sec = node, argv, restart_sec
        self.stopping = threading.Event()
        self.starts = 0
        self.current = None
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self) -> None:
        while not self.stopping.is_set():
            self.starts += 1
            self.current = self.node.lab.start("n1", self.argv,
                                               name=f"agent-n1-{self.starts}")
            self.node.agents["n1"] = self.current
            self.current.wait()
            self.stopping.wait(self.restart_sec)

    def stop(self) -> None:
        self.stopping.set()
        if self.current is not None and self.current.poll() is None:
            os.killpg(self.current.pid, signal.SIGTERM)  # systemctl stop
        self.thread.join(timeout=30)


def test_systemd_unit_runs_the_agent_and_restarts_it(lab_factory, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("netns test: needs root")
    pid1 = subprocess.run(["ps", "-p", "1", "-o", "comm="], capture_output=True,
                          text=True).stdout.strip()
    assert pid1 != "systemd", "systemd is PID 1 here: run the unit with systemd instead"
    service = parse_unit(UNIT)["Service"]
    assert service["Restart"] == ["always"]
    node = Cluster(lab_factory(underlay(("n1",))), tmp_path, nodes=("n1",))
    env_file = f"DCNET_CONF={node.conf_path('n1')}\nDCNET_IFACE=eth0\n"
    argv = exec_start(service, {"/etc/default/dcnet-agent": env_file}, "n1")
    assert os.path.basename(argv[0]) == "dcnet-agent"
    argv[0] = AGENT  # the unit's /usr/local/bin/dcnet-agent: this tree's
    marker = _record_fallbacks(node.bin_dir)
    supervisor = RestartAlways(node, argv, float(service["RestartSec"][0]))
    echo = None
    try:
        wait_until(lambda: "n1" in node.agents, "the first start")
        node.wait_agent("n1")
        runtime = node.runtime("n1")
        first = node.pod("sd-a")
        a_ip = address_of(runtime.add("sd-a", first))
        echo = EchoServer(first, a_ip)
        for signum in (signal.SIGKILL, signal.SIGTERM):
            old = node.agents["n1"]
            os.killpg(old.pid, signum)
            wait_until(lambda old=old: node.agents["n1"] is not old, "a restart")
            node.wait_agent("n1")
        assert supervisor.starts == 3
        second = node.pod("sd-b")
        b_ip = address_of(runtime.add("sd-b", second))
        assert tcp_echo(second, a_ip) == b"hello dcnet"  # the old pod kept working
        runtime.check("sd-a", first)
        runtime.delete("sd-a", first)
        runtime.delete("sd-b", second)
        runtime.status()
        assert b_ip != a_ip and node.reservations("n1") == {}
    finally:
        if echo is not None:
            echo.close()
        supervisor.stop()
        node.remove_pods()
    with open(marker) as handle:
        assert handle.read() == "", node.agent_log("n1")  # none by the fallback
