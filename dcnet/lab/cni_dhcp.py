"""A macvlan/DHCP lab for the netns tests, the benchmark and the demo: an underlay with
nodes and a real DHCP server (dnsmasq, or Kea for leases shorter than dnsmasq's 2 minutes).

``DhcpLab`` builds node namespaces and a ``dhcp`` namespace on one bridge, starts and
stops the server (its lease file is what the tests read: renewals move a lease's expiry,
releases remove it), writes each node's dcnet conflist, starts ``dcnet-agent`` per node,
and makes pod namespaces that are removed at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from dcnet.cni.install import install
from dcnet.lab.builder import Lab
from dcnet.lab.cni_invoke import CniRuntime
from dcnet.sysio import netns, proc

REF_DIR = "/usr/lib/cni"
AGENT = os.path.join(os.path.dirname(sys.executable), "dcnet-agent")
NET = "192.168.77"
ROUTER = f"{NET}.254"
SERVER = f"{NET}.250"
NET6 = "fd77:77::"  # the segment's IPv6 /64 (``ipv6=True``): dnsmasq's RA announces it
SERVER6 = f"{NET6}250"


def wait_until(predicate, what: str, timeout: float = 30.0, step: float = 0.05):
    """Poll until predicate() is truthy (a readiness wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(step)


def topology(nodes=("n1", "n2"), ipv6: bool = False) -> dict:
    """Nodes and the ``dhcp`` host on one bridge; with ``ipv6`` every host also has an
    address in ``NET6``/64 (the node's is what the host shim takes)."""
    def addresses(v4: str, host: int) -> list[str]:
        return [f"{v4}/24", f"{NET6}{host:x}/64"] if ipv6 else [f"{v4}/24"]
    hosts = [*nodes, "dhcp", "sw"]
    links = [{"a": {"host": node, "ifname": "eth0",
                    "addresses": addresses(f"{NET}.{i + 1}", i + 1)},
              "b": {"host": "sw", "ifname": f"p-{node}", "bridge": "br0"}}
             for i, node in enumerate(nodes)]
    links.append({"a": {"host": "dhcp", "ifname": "eth0",
                        "addresses": addresses(SERVER, 0x250)},
                  "b": {"host": "sw", "ifname": "p-dhcp", "bridge": "br0"}})
    return {"hosts": hosts, "bridges": [{"name": "br0", "host": "sw"}], "links": links,
            "routes": [{"host": node, "dst": "default", "via": ROUTER} for node in nodes]}


class DhcpLab:
    """Nodes + a DHCP server on one L2 segment, dcnet installed, agents per node."""

    def __init__(self, lab: Lab, root: Path, nodes=("n1", "n2")):
        self.lab, self.root, self.nodes = lab, root, nodes
        self.bin_dir = os.path.dirname(install(str(root / "bin")))
        self.server = None
        self.server_kind = None
        self.server_name = ""
        self.agents: dict[str, object] = {}
        self.starts = 0
        self.pods: list[str] = []
        self.lease_file = root / "server.leases"

    # ------------------------------------------------------------ the DHCP server

    def start_dnsmasq(self, first: int = 100, last: int = 199, t1: int | None = 6,
                      t2: int | None = 10, lease: str = "2m", fresh: bool = False,
                      ping: bool = False, ra: bool = False, dhcpv6: bool = False,
                      extra: tuple[str, ...] = ()) -> None:
        """dnsmasq serving DHCPv4; with ``ra`` also router advertisements of ``NET6``/64
        (autonomous flag, no DHCPv6: SLAAC), every 4 s, router lifetime 600 s; with
        ``dhcpv6`` the RAs say "managed" instead and dnsmasq leases ``NET6``::100-1ff
        for ``lease``."""
        if fresh and self.lease_file.exists():
            self.lease_file.unlink()
        argv = ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
                "--interface=eth0", "--bind-interfaces", "--user=root",
                f"--pid-file={self.root}/dnsmasq.pid", "--log-facility=-", "--log-dhcp",
                "--dhcp-authoritative", f"--dhcp-range={NET}.{first},{NET}.{last},{lease}",
                f"--dhcp-leasefile={self.lease_file}",
                f"--dhcp-option=option:router,{ROUTER}", "--dhcp-option=option:dns-server,"
                f"{SERVER}", "--dhcp-option=option:domain-name,pods.lab"]
        if not ping:
            argv.append("--no-ping")
        if ra or dhcpv6:
            argv += ["--enable-ra", "--ra-param=eth0,4,600",
                     f"--dhcp-range={NET6}100,{NET6}1ff,64,{lease}" if dhcpv6
                     else "--dhcp-range=::,constructor:eth0,ra-only,64,10m"]
        if dhcpv6:
            argv += [f"--dhcp-option=option6:dns-server,[{SERVER6}]",
                     "--dhcp-option=option6:domain-search,pods6.lab"]
        argv += list(extra)
        if t1:
            argv.append(f"--dhcp-option=option:T1,{t1}")
        if t2:
            argv.append(f"--dhcp-option=option:T2,{t2}")
        self._start_server(argv, "dnsmasq")

    def start_kea(self, valid: int = 8, renew: int = 3, rebind: int = 5) -> None:
        self.lease_file = self.root / "kea-leases.csv"
        config = {"Dhcp4": {
            "interfaces-config": {"interfaces": ["eth0"], "dhcp-socket-type": "raw"},
            "lease-database": {"type": "memfile", "name": str(self.lease_file),
                               "lfc-interval": 0},
            "valid-lifetime": valid, "renew-timer": renew, "rebind-timer": rebind,
            "subnet4": [{"id": 1, "subnet": f"{NET}.0/24",
                         "pools": [{"pool": f"{NET}.100 - {NET}.199"}],
                         "option-data": [{"name": "routers", "data": ROUTER}]}],
            "loggers": [{"name": "kea-dhcp4", "severity": "INFO",
                         "output_options": [{"output": "stdout"}]}]}}
        path = self.root / "kea.json"
        path.write_text(json.dumps(config))
        env_dir = self.root / "kea-run"
        env_dir.mkdir(exist_ok=True)
        self._start_server(["env", f"KEA_PIDFILE_DIR={env_dir}", f"KEA_LOCKFILE_DIR={env_dir}",
                            "kea-dhcp4", "-c", str(path)], "kea")

    def _start_server(self, argv: list[str], kind: str) -> None:
        self.starts += 1
        self.server_name = f"{kind}-{self.starts}"
        self.server = self.lab.start("dhcp", argv, name=self.server_name)
        self.server_kind = kind
        wait_until(lambda: self.lease_file.exists() or self.server.poll() is not None,
                   f"{kind} to start", 15)
        assert self.server.poll() is None, self.log(f"{kind}-{self.starts}")

    def stop_server(self) -> None:
        if self.server is not None:
            proc.stop(self.server)
            self.server = None

    def server_leases(self) -> dict[str, dict]:
        """The server's live leases by address: {mac, expiry, hostname, clientid}."""
        if not self.lease_file.exists():
            return {}
        out: dict[str, dict] = {}
        lines = self.lease_file.read_text().splitlines()
        if self.server_kind == "kea":
            for line in lines[1:]:
                fields = line.split(",")
                if len(fields) < 10:
                    continue
                address, mac, _cid, valid, expire = fields[:5]
                if int(valid) == 0 or int(expire) < time.time() - 1:
                    out.pop(address, None)  # a release or an expired entry
                else:
                    out[address] = {"mac": mac, "expiry": int(expire), "hostname": fields[8]}
            return out
        for line in lines:
            fields = line.split()
            if len(fields) >= 4:
                out[fields[2]] = {"expiry": int(fields[0]), "mac": fields[1],
                                  "hostname": fields[3], "clientid": fields[4]
                                  if len(fields) > 4 else ""}
        return out

    # ------------------------------------------------------------ dcnet

    def plugin(self, node: str, **extra) -> dict:
        conf = {"type": "dcnet", "mode": "macvlan", "runDir": str(self.root / f"run-{node}"),
                "stateDir": str(self.root / f"state-{node}"), "dhcp": {"clientID": "pod",
                                                                        "timeout": 20}}
        conf.update(extra)
        return conf

    def conflist(self, node: str, version: str = "1.1.0", **extra) -> dict:
        return {"cniVersion": version, "name": "mvnet", "plugins": [self.plugin(node, **extra)]}

    def conf_path(self, node: str, **extra) -> str:
        path = self.root / f"{node}.conflist"
        path.write_text(json.dumps(self.conflist(node, **extra)))
        return str(path)

    def runtime(self, node: str, version: str = "1.1.0", **extra) -> CniRuntime:
        return CniRuntime(self.conflist(node, version, **extra), [self.bin_dir, REF_DIR],
                          self.lab.netns(node))

    def socket_path(self, node: str) -> Path:
        return self.root / f"run-{node}" / "mvnet" / "agent.sock"

    def journal_dir(self, node: str) -> Path:
        return self.root / f"state-{node}" / "mvnet" / "leases"

    def queue_dir(self, node: str) -> Path:
        return self.root / f"state-{node}" / "mvnet" / "release"

    def journal(self, node: str) -> dict[str, dict]:
        directory = self.journal_dir(node)
        if not directory.exists():
            return {}
        return {p.stem: json.loads(p.read_text()) for p in directory.glob("*.json")}

    def start_agent(self, node: str, **extra) -> object:
        self.starts += 1
        popen = self.lab.start(node, [AGENT, "run", "--conf", self.conf_path(node, **extra),
                                      "--sweep", "0.5"], name=f"agent-{node}-{self.starts}")
        self.agents[node] = popen

        log_name = f"agent-{node}-{self.starts}"

        def ready() -> bool:  # this run's agent serves the network's socket
            assert popen.poll() is None, f"agent on {node} exited: {self.agent_log(node)}"
            return f"serving {self.socket_path(node)}" in self.log(log_name)
        wait_until(ready, f"agent on {node}")
        return popen

    def stop_agent(self, node: str, kill: bool = False) -> None:
        popen = self.agents.pop(node)
        if kill:
            popen.kill()
            popen.wait(timeout=10)
        else:
            proc.stop(popen)

    def log(self, name: str) -> str:
        path = Path(self.lab.log_dir) / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def server_log(self) -> str:
        """Every DHCP server run's log, oldest first."""
        logs = [p for p in Path(self.lab.log_dir).glob("*.log")
                if p.stem.split("-")[0] in ("dnsmasq", "kea")]
        return "".join(p.read_text() for p in sorted(logs, key=lambda p: p.stat().st_mtime))

    def agent_log(self, node: str) -> str:
        logs = sorted(Path(self.lab.log_dir).glob(f"agent-{node}-*.log"),
                      key=lambda p: int(p.stem.rsplit("-", 1)[1]))
        return "".join(p.read_text() for p in logs)

    # ------------------------------------------------------------ pods

    def pod(self, name: str) -> str:
        full = f"{self.lab.prefix}-{name}"
        netns.create(full)
        self.pods.append(full)
        return f"/run/netns/{full}"

    def remove_pod(self, path: str) -> None:
        name = path.rsplit("/", 1)[1]
        netns.remove(name)
        self.pods.remove(name)

    def remove_pods(self) -> None:
        for name in self.pods:
            if netns.exists(name):
                netns.remove(name)
        self.pods.clear()

    def close(self) -> None:
        for node in list(self.agents):
            self.stop_agent(node)
        self.remove_pods()


def pod_ip(path: str, ifname: str = "eth0") -> list[str]:
    """The IPv4 addresses (cidr) on the pod's interface."""
    name = path.rsplit("/", 1)[1]
    out = subprocess.run(["ip", "-n", name, "-j", "-4", "addr", "show", "dev", ifname],
                         capture_output=True, text=True).stdout
    if not out.strip():
        return []
    return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(out)
            for a in link.get("addr_info", [])]


def pod_ip6(path: str, ifname: str = "eth0") -> list[str]:
    """The global IPv6 addresses (cidr) on the pod's interface."""
    name = path.rsplit("/", 1)[1]
    out = subprocess.run(["ip", "-n", name, "-j", "-6", "addr", "show", "dev", ifname,
                          "scope", "global"], capture_output=True, text=True).stdout
    if not out.strip():
        return []
    return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(out)
            for a in link.get("addr_info", []) if "local" in a]


def pod_link(path: str, ifname: str = "eth0") -> dict | None:
    name = path.rsplit("/", 1)[1]
    out = subprocess.run(["ip", "-n", name, "-j", "-d", "link", "show", "dev", ifname],
                         capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        return None
    return json.loads(out.stdout)[0]


def pod_state(path: str) -> str:
    name = path.rsplit("/", 1)[1]
    parts = [subprocess.run(["ip", "-n", name, *argv], capture_output=True, text=True).stdout
             for argv in (["-d", "link"], ["-4", "addr"], ["route"])]
    return "".join(parts)
