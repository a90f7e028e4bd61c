"""A lab for the ELB on etcd (tests, benchmark): etcd, directors with HAProxy, real servers.

One bridge (``etcdbr`` in host ``etcdsw``, 10.99.0.0/24) joins the three etcd members
(10.99.0.1-3), the registrar ``reg`` (10.99.0.10, "a third machine"), directors
``dir1..dirN`` (10.99.0.21..) and real servers ``rs1..rsM`` (10.99.0.101..) serving HTTP
on 8080. Every director holds the VIP on its loopback and runs its own HAProxy (listening
on the VIP) and, once started, ``elbctl agent --target haproxy`` as a process in its
namespace. Admin commands run in ``etcdsw``. With ``auth``, etcd authentication is on and
everybody uses their own user: ``admin`` (elb-admin), ``dirN`` (elb-director-dirN),
``svc`` (elb-service-JOB of service 0), set up with ``elbctl acl``.
"""

from __future__ import annotations

import copy
import os
import sys
import time

import yaml

from dcnet.haproxy.daemon import wait_ready, write_initial
from dcnet.haproxy.paths import Paths
from dcnet.haproxy.runtime import Runtime
from dcnet.lab import haproxy_lab as hlab
from dcnet.lab.etcd_lab import EtcdCluster, etcd_hosts_topology, start_etcd_cluster
from dcnet.model import parse_model

ETCD_HOSTS = ("etcd1", "etcd2", "etcd3")
SWITCH, BRIDGE, REGISTRAR = "etcdsw", "etcdbr", "reg"
VIP = "203.0.113.10"
SERVICE_PORT, SERVER_PORT = 80, 8080
JOB = hlab.JOB
PREFIX = "/dcnet"


def director(i: int) -> str:
    return f"dir{i}"


def director_address(i: int) -> str:
    return f"10.99.0.{20 + i}"


def server_address(i: int) -> str:
    return f"10.99.0.{100 + i}"


def topology(directors: int, servers: int, python: str = sys.executable) -> dict:
    topo = etcd_hosts_topology(hosts=ETCD_HOSTS, bridge=BRIDGE, switch=SWITCH)
    extra = [(REGISTRAR, "10.99.0.10")]
    extra += [(director(i), director_address(i)) for i in range(1, directors + 1)]
    extra += [(f"rs{i}", server_address(i)) for i in range(1, servers + 1)]
    for host, address in extra:
        topo["hosts"].append({"name": host})
        topo["links"].append({"a": {"host": host, "ifname": "eth0",
                                    "addresses": [f"{address}/24"]},
                              "b": {"host": SWITCH, "ifname": f"to-{host}"[:15],
                                    "bridge": BRIDGE}})
    topo["processes"] = [{"name": f"rs{i}-http", "host": f"rs{i}",
                          "ready_tcp_port": SERVER_PORT,
                          "argv": [python, "-m", "dcnet.lab.haproxy_lab", str(SERVER_PORT),
                                   server_address(i)]} for i in range(1, servers + 1)]
    return topo


BASE = {
    "version": 1,
    "carriers": [{"name": "bgp", "uplink": "bgp0", "gateway": "203.0.113.1", "table": 104,
                  "vip_ranges": ["203.0.113.0/24"], "default": True}],
    "haproxy": {"spare_slots": 4, "hard_stop_after": 30, "maxconn": 2000},
    "services": [],
}


def model_data(servers: dict[str, int], services: int = 1) -> dict:
    """``services`` services on the VIP (ports 80, 81, ...) over ``servers`` {addr: w}."""
    data = copy.deepcopy(BASE)
    for n in range(services):
        data["services"].append({
            "job": hlab.job_name(n), "vips": {"bgp": VIP},
            "ports": [{"port": SERVICE_PORT + n, "scheduler": "wrr", "forward": "nat",
                       "target_port": SERVER_PORT}],
            "real_servers": [{"address": a, "weight": w} for a, w in servers.items()],
            "health_check": {"type": "tcp", "interval": 1, "timeout": 1}})
    return data


class ElbLab:
    """The lab plus helpers; build with :meth:`create`."""

    def __init__(self, lab, cluster: EtcdCluster, workdir: str, directors: int):
        self.lab, self.cluster, self.workdir = lab, cluster, workdir
        self.directors = [director(i) for i in range(1, directors + 1)]
        self.passwords: dict[str, str] = {}
        self.agents: dict[str, object] = {}

    @classmethod
    def create(cls, lab_factory, workdir: str, directors: int = 2, servers: int = 3):
        lab = lab_factory(topology(directors, servers))
        cluster = start_etcd_cluster(lab, list(ETCD_HOSTS), os.path.join(workdir, "etcd"),
                                     client_host=SWITCH)
        lab.defer("close the etcd clients handed out", cluster.close)
        cluster.wait_healthy(60.0)
        return cls(lab, cluster, workdir, directors)

    # ------------------------------------------------------------------ credentials

    def password_file(self, user: str) -> str:
        path = os.path.join(self.workdir, f"{user}.password")
        if user not in self.passwords:
            self.passwords[user] = f"pw-{user}-{os.urandom(6).hex()}"
            with open(path, "w") as handle:
                handle.write(self.passwords[user] + "\n")
        return path

    def url(self, user: str | None = None) -> str:
        return self.cluster.url(PREFIX, user=user,
                                password_file=self.password_file(user) if user else None)

    def elbctl(self, host: str, *args: str, user: str | None = None, check: bool = True,
               timeout: float = 120.0):
        argv = [sys.executable, "-m", "dcnet.cli.elbctl", *args, "--store", self.url(user)]
        return self.lab.run(host, argv, check=check, timeout=timeout)

    def setup_auth(self, services=(JOB,)) -> None:
        """Users admin, dirN and svc, their roles, then authentication on (elbctl acl)."""
        self.elbctl(SWITCH, "acl", "setup", *(f"--director={d}" for d in self.directors),
                    *(f"--service={s}" for s in services))
        self.elbctl(SWITCH, "acl", "user", "admin", "--admin",
                    "--password-file", self.password_file("admin"))
        for name in self.directors:
            self.elbctl(SWITCH, "acl", "user", name, f"--director={name}",
                        "--password-file", self.password_file(name))
        self.elbctl(SWITCH, "acl", "user", "svc", f"--service={services[0]}",
                    "--password-file", self.password_file("svc"))
        self.elbctl(SWITCH, "acl", "enable", "--root-password-file", self.password_file("root"))
        self.cluster.root_password = self.passwords["root"]

    # ------------------------------------------------------------------ models

    def write_model(self, data: dict, name: str = "model.yaml") -> str:
        path = os.path.join(self.workdir, "models", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            yaml.safe_dump(data, handle, sort_keys=False)
        return path

    def push(self, data: dict, user: str | None = "admin", name: str = "model.yaml") -> int:
        done = self.elbctl(SWITCH, "push", "-f", self.write_model(data, name), "-o", "json",
                           user=user)
        return yaml.safe_load(done.stdout)["revision"]

    # ------------------------------------------------------------------ directors

    def paths(self, name: str) -> Paths:
        return Paths(run_dir=os.path.join(self.workdir, name, "run"))

    def start_director(self, name: str, first_model: dict, user: str | None = None,
                       resync: float = 60.0) -> None:
        """The VIP on lo, HAProxy started on ``first_model``, then the agent."""
        ipr = self.lab.iproute(name)
        lo = ipr.link_lookup(ifname="lo")[0]
        if not ipr.get_addr(address=VIP):
            ipr.addr("add", index=lo, address=VIP, prefixlen=32)
        paths = self.paths(name)
        write_initial(parse_model(yaml.safe_dump(first_model), source=f"<{name} first file>"),
                      paths)
        popen = self.lab.start(name, paths.master_argv(), name=f"haproxy-{name}")
        wait_ready(paths, popen)
        self.start_agent(name, user=user, resync=resync)

    def start_agent(self, name: str, user: str | None = None, resync: float = 60.0):
        paths = self.paths(name)
        argv = [sys.executable, "-m", "dcnet.cli.elbctl", "agent", "--store", self.url(user),
                "--director", name, "--target", "haproxy", "--haproxy-run-dir", paths.run_dir,
                "--cache-dir", os.path.join(self.workdir, name, "cache"),
                "--resync", str(resync)]
        generation = sum(1 for k in self.agents if k.startswith(f"agent-{name}"))
        label = f"agent-{name}" + (f"-{generation}" if generation else "")
        self.agents[label] = self.lab.start(name, argv, name=label)
        return self.agents[label]

    def runtime(self, name: str) -> dict[str, dict]:
        """HAProxy's live servers per backend: {backend: {ADDR:PORT: attrs}}."""
        paths = self.paths(name)
        rows = Runtime(paths.admin_socket, paths.master_socket).servers()
        out: dict[str, dict] = {}
        for row in rows:
            if not row.free and row.address != "0.0.0.0":
                out.setdefault(row.backend, {})[row.key] = row.attrs()
        return out

    def serves(self, name: str, port: int = SERVICE_PORT) -> bool:
        return self.lab.call(name, hlab_one_request, VIP, port, 3.0) is None

    # ------------------------------------------------------------------ waiting

    def wait(self, predicate, timeout: float = 60.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
            except Exception as exc:  # not there yet (socket, etcd, ...): keep polling
                last = exc
            if last and not isinstance(last, Exception):
                return last
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}"
                             + self.agent_logs())

    def agent_logs(self, tail: int = 1500) -> str:
        out = []
        for label in self.agents:
            path = os.path.join(self.lab.log_dir or "", f"{label}.log")
            if os.path.exists(path):
                with open(path, errors="replace") as handle:
                    out.append(f"\n--- {label}:\n{handle.read()[-tail:]}")
        return "".join(out)


def hlab_one_request(host: str, port: int, timeout: float):
    from dcnet.lab.haproxy_loadgen import one_request

    return one_request(host, port, timeout)
