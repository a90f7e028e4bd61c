"""A built mode as the engine sees it: where the client and the server run, and servers.

:class:`LiveMode` names the client and server namespaces (``None`` is the root
namespace, used only by the loopback baseline), the address servers bind to and the one
the client connects to (the VIP for IPVS), the ports, and the interfaces whose MTU,
offloads and qdisc the result file records, and the address ``family`` (``ipv4`` or
``ipv6``): a dual-stack mode is two LiveModes on the same labs, each with its own servers
on its own ports. ``start_server`` starts a long-running
server and waits until it listens; ``wait_reachable`` pings the target from the client
until it answers (a fresh IPv6 path resolves its neighbours first), so no sample pays
for that; every server is stopped when the mode is torn down
(lab servers also by the lab itself, which kills whatever lives in its namespaces).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dcnet.lab.builder import Lab
from dcnet.sysio import netns, proc

READY_TIMEOUT = 15.0
REACHABLE_TIMEOUT = 30.0
_TCP_LISTEN = "0A"


class ServerFailed(RuntimeError):
    """A server exited or did not listen in time; the message carries its log tail."""


@dataclass
class LiveMode:
    """One built mode (see the module docstring)."""

    name: str
    client_ns: str | None
    server_ns: str | None
    bind_address: str
    target: str
    ports: dict[str, int]
    interfaces: list[tuple[str | None, str]]
    starter: Callable[[str, list[str], str], subprocess.Popen]
    log_dir: str
    notes: dict[str, Any] = field(default_factory=dict)
    labs: list[Lab] = field(default_factory=list)
    servers: dict[str, subprocess.Popen] = field(default_factory=dict)
    family: str = "ipv4"

    def server_name(self, key: str) -> str:
        """``key``, suffixed ``-ipv6`` for IPv6 servers (log files, lab process names)."""
        return key if self.family == "ipv4" else f"{key}-{self.family}"

    def start_server(self, key: str, argv: list[str], protocol: str, port: int) -> None:
        """Start ``argv`` in the server namespace as ``key`` and wait for ``port``."""
        if key in self.servers and self.servers[key].poll() is None:
            return
        log_path = os.path.join(self.log_dir, f"{self.name}-{self.server_name(key)}.log")
        popen = self.starter(self.server_name(key), argv, log_path)
        self.servers[key] = popen
        wait_listening(self.server_ns, protocol, port, popen, log_path)

    def wait_reachable(self, timeout: float = REACHABLE_TIMEOUT) -> int:
        """Ping the target from the client until it answers; returns the pings sent.
        RuntimeError when it never does within ``timeout`` (a wait bound, not a figure)."""
        deadline = time.monotonic() + timeout
        sent = 0
        while True:
            sent += 1
            done = proc.run(["ping", "-n", "-c", "1", "-W", "1", self.target],
                            netns=self.client_ns, check=False, timeout=10.0)
            if done.returncode == 0:
                return sent
            if time.monotonic() > deadline:
                tail = (done.stdout + done.stderr).strip().splitlines()[-1:]
                raise RuntimeError(f"{self.name} over {self.family}: {self.target} did not "
                                   f"answer ping from the client within {timeout:g}s "
                                   f"({sent} tries; {' '.join(tail)})")
            time.sleep(0.1)

    def lab_prefixes(self) -> list[str]:
        return [lab.prefix for lab in self.labs]

    def namespaces(self) -> list[str]:
        return [name for lab in self.labs for name in lab.netns_names]


def listening(protocol: str, port: int) -> bool:
    """In the calling namespace: is a socket listening on tcp ``port`` / bound to udp?"""
    names = ("tcp", "tcp6") if protocol == "tcp" else ("udp", "udp6")
    for name in names:
        try:
            with open(f"/proc/thread-self/net/{name}") as handle:
                rows = handle.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and (protocol == "udp" or fields[3] == _TCP_LISTEN):
                return True
    return False


def wait_listening(namespace: str | None, protocol: str, port: int,
                   popen: subprocess.Popen, log_path: str,
                   timeout: float = READY_TIMEOUT) -> None:
    """Wait until the server listens; ServerFailed if it exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if popen.poll() is not None:
            raise ServerFailed(f"server exited with {popen.returncode} before listening on "
                               f"{protocol}/{port}{log_tail(log_path)}")
        ready = (listening(protocol, port) if namespace is None
                 else netns.run_in(namespace, listening, protocol, port))
        if ready:
            return
        if time.monotonic() > deadline:
            raise ServerFailed(f"server not listening on {protocol}/{port} after {timeout}s"
                               f"{log_tail(log_path)}")
        time.sleep(0.05)


def log_tail(path: str, size: int = 800) -> str:
    try:
        with open(path, errors="replace") as handle:
            tail = handle.read()[-size:].strip()
    except OSError:
        return ""
    return f"; log tail:\n{tail}" if tail else ""


def lab_starter(lab: Lab, host: str) -> Callable[[str, list[str], str], subprocess.Popen]:
    """Servers started by the lab in ``host`` (stopped at its teardown, janitor-visible)."""
    def start(key: str, argv: list[str], log_path: str) -> subprocess.Popen:
        return lab.start(host, argv, name=f"netbench-{key}", log_path=log_path)
    return start


def root_starter(stack: contextlib.ExitStack) -> Callable[[str, list[str], str],
                                                         subprocess.Popen]:
    """Servers in the root namespace, each stopped when ``stack`` unwinds."""
    def start(key: str, argv: list[str], log_path: str) -> subprocess.Popen:
        popen = proc.start(argv, log_path=log_path)
        stack.callback(proc.stop, popen, 3.0)
        return popen
    return start


def free_loopback_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on ``host`` (127.0.0.1 or ::1; asked of the
    kernel, then released)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as udp:
                    udp.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port found")
