"""A lab where DNS follows health: named, HAProxy and ``elbctl dns follow`` in one ELB host.

The HAProxy lab's topology with one real server (``rs1`` behind ``lb``'s bridge) plus
two DNS clients linked to ``lb``: ``cli-telecom`` (inside telecom's client list) and
``cli-none`` (in no list: the default line's view). ``lb`` runs named (the model's
BIND views), HAProxy (health-checking rs1 every second) and ``elbctl dns follow``
reading HAProxy's server states as telecom's. Used by tests/netns/test_dns_health.py
and bench/dns_health.py; every query goes from a lab client to the lab's named.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time

import yaml

from dcnet.dns.backend import DNSTarget
from dcnet.haproxy.paths import Paths
from dcnet.lab import haproxy_lab as hlab
from dcnet.lab.builder import Lab
from dcnet.lab.dns_lab import dig, make_rndc_key, start_named
from dcnet.model import load_model
from dcnet.sysio import proc

ZONE = "elb.example.com"
TELECOM_VIP, DEFAULT_VIP = "198.51.100.10", "203.0.113.10"
CLIENTS = {"telecom": ("192.0.2.1", "192.0.2.2", 26), "none": ("10.99.0.1", "10.99.0.2", 24)}
SERVER_ARGV = [sys.executable, "-m", "dcnet.lab.haproxy_lab", str(hlab.SERVER_PORT),
               hlab.server_address(1)]
FAST = {"down_after": 1, "up_after": 2, "half_life": 60}


def topology() -> dict:
    topo = hlab.topology(1)
    for carrier, (server, client, bits) in CLIENTS.items():
        topo["hosts"].append(f"cli-{carrier}")
        topo["links"].append({
            "a": {"host": "lb", "ifname": f"to-{carrier}", "addresses": [f"{server}/{bits}"]},
            "b": {"host": f"cli-{carrier}", "ifname": "eth0",
                  "addresses": [f"{client}/{bits}"]}})
    return topo


def model_data(health: dict | None = None) -> dict:
    data = hlab.model_data({hlab.server_address(1): 1})
    data = copy.deepcopy(data)
    data["carriers"].insert(0, {"name": "telecom", "uplink": "ctc0",
                                "gateway": "198.51.100.1", "table": 101,
                                "vip_ranges": ["198.51.100.0/26"], "cidrs": "telecom.txt"})
    data["services"][0]["vips"] = {"telecom": TELECOM_VIP, "bgp": DEFAULT_VIP}
    data["dns"] = {"zone": ZONE, "health": dict(FAST if health is None else health)}
    return data


class HealthLab:
    """The running lab: named, HAProxy, rs1 and the follow loop; queries and server
    stop/start. ``follow_args``: extra arguments of ``elbctl dns follow``."""

    def __init__(self, lab: Lab, root: str, health: dict | None = None,
                 interval: float = 0.5, follow_args: tuple[str, ...] = ()):
        self.lab, self.root = lab, root
        os.makedirs(root, exist_ok=True)
        self.model_path = os.path.join(root, "elb.yaml")
        with open(os.path.join(root, "telecom.txt"), "w") as fh:
            fh.write("192.0.2.0/26\n")
        with open(self.model_path, "w") as fh:
            fh.write(yaml.safe_dump(model_data(health), sort_keys=False))
        self.model = load_model(self.model_path)
        self.bind_dir = os.path.join(root, "bind")
        self.key = make_rndc_key(self.bind_dir)
        self.netns = lab.netns("lb")
        done = self.elbctl("render", "dns", "-f", self.model_path, "-o", self.bind_dir)
        if done.returncode:
            raise RuntimeError(f"elbctl render dns failed: {done.stderr}")
        start_named(lab, "lb", self.bind_dir,
                    DNSTarget(directory=self.bind_dir, netns=self.netns).rndc)
        self.paths = Paths(run_dir=os.path.join(root, "haproxy"))
        hlab.start_haproxy(lab, self.model, self.paths)
        self.follow_log = os.path.join(root, "follow.log")
        self.follow = lab.start("lb", [
            sys.executable, "-m", "dcnet.cli.elbctl", "dns", "follow", "-f", self.model_path,
            "--haproxy", f"{self.paths.admin_socket}=telecom", "--interval", str(interval),
            "--dns-dir", self.bind_dir, "--dns-rndc-key", self.key, *follow_args],
            name="dns-follow", log_path=self.follow_log)
        self.server_runs = 0

    def elbctl(self, *args: str) -> subprocess.CompletedProcess:
        return proc.run([sys.executable, "-m", "dcnet.cli.elbctl", *args], netns=self.netns,
                        check=False)

    def name(self) -> str:
        return self.model.dns.name(self.model.services[0].job)

    def answer(self, client: str) -> list[str]:
        return dig(self.lab, f"cli-{client}", CLIENTS[client][0], self.name())

    def wait_answer(self, client: str, expected: str, deadline: float = 60.0,
                    poll: float = 0.02) -> float:
        """Query until ``client`` gets ``expected`` (seconds waited); TimeoutError with
        the last answer and the follow log's tail after ``deadline`` seconds."""
        start = time.monotonic()
        got: list[str] = []
        while time.monotonic() - start < deadline:
            got = self.answer(client)
            if got == [expected]:
                return time.monotonic() - start
            if self.follow.poll() is not None:
                break
            time.sleep(poll)
        raise TimeoutError(f"{client} still gets {got}, not {expected}, after "
                           f"{time.monotonic() - start:.1f}s; follow log:\n{self.log()[-3000:]}")

    def log(self) -> str:
        with open(self.follow_log, errors="replace") as fh:
            return fh.read()

    def stop_server(self) -> None:
        """Stop rs1's HTTP server (the service's last real server)."""
        name = "rs1-http" if self.server_runs == 0 else f"rs1-http-{self.server_runs}"
        proc.stop(self.lab.process(name), 3.0)

    def start_server(self) -> None:
        self.server_runs += 1
        self.lab.start("rs1", SERVER_ARGV, name=f"rs1-http-{self.server_runs}")
