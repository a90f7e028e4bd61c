"""etcd clusters inside network-namespace labs (tests, demo, benchmarks).

It owns the topology fragment that puts etcd member hosts on one bridge
(:func:`etcd_hosts_topology`), the per-cluster TLS material (a CA, one server/peer
certificate per member with the member's IP as SAN, client certificates; made with the
``openssl`` CLI), starting one etcd member per lab host with :meth:`Lab.start` (so lab
teardown always stops them), stopping/killing/restarting members, waiting until the
cluster is healthy and enabling auth. Clients come from :mod:`dcnet.sysio.etcd`.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dcnet.lab.builder import Lab, LabError
from dcnet.sysio import netns as netns_mod
from dcnet.sysio import proc
from dcnet.sysio.etcd import Client, EtcdError, Settings

ETCD = "/usr/bin/etcd"
CLIENT_PORT = 2379
PEER_PORT = 2380
# Raft timing for a loaded 2-core machine: heartbeats every 100 ms, an election only
# after 1 s without one (the etcd guide: election >= 10 x heartbeat; defaults 100/1000).
HEARTBEAT_MS = 100
ELECTION_MS = 1000
CERT_DAYS = 30
CLIENT_CERT_NAME = "dcnet-client"
ROOT_USER = "root"


def etcd_hosts_topology(subnet: str = "10.99.0.0/24",
                        hosts: Sequence[str] = ("etcd1", "etcd2", "etcd3"),
                        bridge: str = "etcdbr", switch: str = "etcdsw") -> dict:
    """A topology fragment: host ``switch`` holds ``bridge`` (with the subnet's last
    usable address, a vantage point for clients) and each of ``hosts`` has eth0 on it
    with the subnet's 1st, 2nd, ... address. Merge its lists into a bigger topology."""
    net = ipaddress.ip_network(subnet)
    usable = list(net.hosts())
    if len(usable) < len(hosts) + 1:
        raise ValueError(f"etcd_hosts_topology: subnet {subnet} too small for "
                         f"{len(hosts)} hosts and the switch")
    links = [{"a": {"host": host, "ifname": "eth0",
                    "addresses": [f"{usable[index]}/{net.prefixlen}"]},
              "b": {"host": switch, "ifname": f"to-{host}"[:15], "bridge": bridge}}
             for index, host in enumerate(hosts)]
    return {"hosts": [{"name": switch}, *({"name": host} for host in hosts)],
            "bridges": [{"name": bridge, "host": switch,
                         "addresses": [f"{usable[-1]}/{net.prefixlen}"]}],
            "links": links}


# ---------------------------------------------------------------- TLS material


def _openssl(*args: str) -> None:
    proc.run(["openssl", *args], timeout=60)


class _Pki:
    """A throw-away CA in ``directory`` issuing server and client certificates."""

    def __init__(self, directory: str):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.ca = os.path.join(directory, "ca.crt")
        self.ca_key = os.path.join(directory, "ca.key")
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", str(CERT_DAYS),
                 "-subj", "/CN=dcnet lab etcd CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, name: str, subject: str, ips: Sequence[str] = ()) -> tuple[str, str]:
        """(cert, key) paths for ``name``; usable for server and client auth."""
        cert = os.path.join(self.directory, f"{name}.crt")
        key = os.path.join(self.directory, f"{name}.key")
        csr = os.path.join(self.directory, f"{name}.csr")
        ext = os.path.join(self.directory, f"{name}.ext")
        lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature",
                 "extendedKeyUsage=serverAuth,clientAuth"]
        if ips:
            lines.append("subjectAltName=" + ",".join(f"IP:{ip}" for ip in ips))
        with open(ext, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", key, "-out", csr, "-subj", subject)
        _openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                 "-CAcreateserial", "-out", cert, "-days", str(CERT_DAYS), "-extfile", ext)
        os.unlink(csr)
        return cert, key


# ---------------------------------------------------------------- the cluster


@dataclass
class _Member:
    name: str
    host: str
    address: str
    data_dir: str
    cert: str | None = None
    key: str | None = None
    generation: int = 0
    popen: subprocess.Popen | None = None


@dataclass
class EtcdCluster:
    """A running etcd cluster in a lab; see :func:`start_etcd_cluster`."""

    lab: Lab
    workdir: str
    tls: bool
    client_host: str
    members: list[str]
    endpoints: list[str]
    ca: str | None = None
    root_cert: str | None = None
    root_key: str | None = None
    root_password: str | None = None
    _members: dict[str, _Member] = field(default_factory=dict)
    _pki: _Pki | None = None
    _clients: list[Client] = field(default_factory=list)
    _client_certs: dict[str, tuple[str, str]] = field(default_factory=dict)

    # ------------------------------------------------------------ clients

    def client_cert(self, name: str) -> tuple[str, str]:
        """(cert, key) of an extra client certificate with CN ``name`` (made once)."""
        if self._pki is None:
            raise LabError("etcd cluster without TLS has no client certificates")
        if name not in self._client_certs:
            self._client_certs[name] = self._pki.issue(f"client-{name}", _client_subject(name))
        return self._client_certs[name]

    def url(self, prefix: str = "/dcnet", user: str | None = None,
            password_file: str | None = None) -> str:
        """A store URL (for :func:`dcnet.sysio.etcd.parse_url`) naming every member."""
        hosts = ",".join(self._members[m].address + f":{CLIENT_PORT}" for m in self.members)
        options = []
        if self.tls:
            cert, key = self.client_cert(CLIENT_CERT_NAME)
            options += [f"ca={self.ca}", f"cert={cert}", f"key={key}"]
        if user:
            options.append(f"user={user}")
        if password_file:
            options.append(f"password-file={password_file}")
        query = ("?" + "&".join(options)) if options else ""
        return f"{'etcds' if self.tls else 'etcd'}://{hosts}{prefix}{query}"

    def client(self, user: str | None = None, password: str | None = None,
               prefix: str = "/dcnet", host: str | None = None,
               endpoints: Sequence[str] | None = None, timeout: float = 5.0) -> Client:
        """A Client talking from ``host``'s namespace (default: the client host); with
        auth enabled and no user given, it logs in as root. Closed with the cluster."""
        if user is None and self.root_password is not None:
            user, password = ROOT_USER, self.root_password
        cert = key = None
        if self.tls:
            cert, key = self.root_cert, self.root_key
        settings = Settings(endpoints=tuple(endpoints or self.endpoints), prefix=prefix,
                            ca=self.ca, cert=cert, key=key, user=user, password=password,
                            timeout=timeout)
        client = Client(settings, netns=netns_mod.path_of(self.lab.netns(host or
                                                                         self.client_host)))
        self._clients.append(client)
        return client

    def member_endpoint(self, member: str) -> str:
        return self.endpoints[self.members.index(member)]

    def member_host(self, member: str) -> str:
        return self._members[member].host

    # ------------------------------------------------------------ members

    def start(self, member: str) -> None:
        """Start (or restart, keeping its data) one member."""
        state = self._members[member]
        if state.popen is not None and state.popen.poll() is None:
            raise LabError(f"etcd member {member} is already running")
        state.generation += 1
        name = member if state.generation == 1 else f"{member}-run{state.generation}"
        state.popen = self.lab.start(state.host, self._argv(state), name=name)

    def stop(self, member: str) -> None:
        """SIGTERM (then SIGKILL after 10 s) one member and wait until it exited."""
        state = self._members[member]
        if state.popen is not None:
            proc.stop(state.popen, 10.0)

    def kill(self, member: str) -> None:
        """SIGKILL one member (a crash) and wait until it exited."""
        state = self._members[member]
        if state.popen is not None and state.popen.poll() is None:
            os.killpg(state.popen.pid, signal.SIGKILL)
            state.popen.wait()

    def stop_all(self) -> None:
        for member in self.members:
            self.stop(member)

    def start_all(self) -> None:
        for member in self.members:
            if not self.is_running(member):
                self.start(member)

    def is_running(self, member: str) -> bool:
        popen = self._members[member].popen
        return popen is not None and popen.poll() is None

    def wait_healthy(self, timeout: float = 90.0) -> None:
        """Wait until every running member agrees on one leader and serves a read."""
        deadline = time.monotonic() + timeout
        problem = "no member running"
        while time.monotonic() < deadline:
            problem = self._health_problem()
            if problem is None:
                return
            time.sleep(0.2)
        raise LabError(f"etcd cluster not healthy after {timeout}s: {problem}"
                       + self._log_tails())

    def _health_problem(self) -> str | None:
        running = [m for m in self.members if self.is_running(m)]
        if not running:
            return "no member running"
        leaders = set()
        for member in running:
            client = self._probe_client(member)
            try:
                status = client.status()
                client.get("/")
            except EtcdError as exc:
                return f"{member}: {exc}"
            finally:
                client.close()
                self._clients.remove(client)
            if not status["leader"]:
                return f"{member}: no leader"
            leaders.add(status["leader"])
        if len(leaders) != 1:
            return f"members disagree on the leader: {sorted(leaders)}"
        return None

    def _probe_client(self, member: str) -> Client:
        return self.client(endpoints=[self.member_endpoint(member)], timeout=2.0, prefix="")

    def enable_auth(self, root_password: str) -> None:
        """Create user root (role root) with ``root_password`` and enable auth; later
        clients from :meth:`client` without a user log in as root."""
        admin = self.client(prefix="")
        admin.role_add(ROOT_USER)
        admin.user_add(ROOT_USER, root_password)
        admin.user_grant_role(ROOT_USER, ROOT_USER)
        admin.auth_enable()
        self.root_password = root_password

    def close(self) -> None:
        """Close every client handed out (the lab stops the members)."""
        for client in self._clients:
            client.close()
        self._clients.clear()

    # ------------------------------------------------------------ internals

    def _argv(self, member: _Member) -> list[str]:
        scheme = "https" if self.tls else "http"
        cluster = ",".join(f"{m}={scheme}://{self._members[m].address}:{PEER_PORT}"
                           for m in self.members)
        argv = [ETCD, "--name", member.name, "--data-dir", member.data_dir,
                "--listen-client-urls", f"{scheme}://{member.address}:{CLIENT_PORT}",
                "--advertise-client-urls", f"{scheme}://{member.address}:{CLIENT_PORT}",
                "--listen-peer-urls", f"{scheme}://{member.address}:{PEER_PORT}",
                "--initial-advertise-peer-urls", f"{scheme}://{member.address}:{PEER_PORT}",
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"{self.lab.prefix}-etcd",
                "--heartbeat-interval", str(HEARTBEAT_MS),
                "--election-timeout", str(ELECTION_MS),
                "--logger", "zap", "--log-level", "warn"]
        if self.tls:
            argv += ["--cert-file", member.cert, "--key-file", member.key,
                     "--trusted-ca-file", self.ca, "--client-cert-auth",
                     "--peer-cert-file", member.cert, "--peer-key-file", member.key,
                     "--peer-trusted-ca-file", self.ca, "--peer-client-cert-auth"]
        return argv

    def _log_tails(self) -> str:
        tails = []
        for member in self.members:
            state = self._members[member]
            name = member if state.generation <= 1 else f"{member}-run{state.generation}"
            path = os.path.join(self.lab.log_dir or "", f"{name}.log")
            if os.path.exists(path):
                with open(path, errors="replace") as handle:
                    tail = handle.read()[-600:].strip()
                tails.append(f"\n--- {name} log tail:\n{tail}")
        return "".join(tails)


def _client_subject(name: str) -> str:
    """Client certificates carry no CommonName: with client-cert-auth and auth enabled,
    etcd's gateway answers HTTP 400 to a client certificate with a CN (embed/serve.go);
    the user comes from the token (user/password), the name goes into OU."""
    return f"/O=dcnet lab/OU={name}"


def _first_address(lab: Lab, host: str) -> str:
    for end in lab.topology.endpoints():
        if end.host == host and end.addresses:
            return str(ipaddress.ip_interface(end.addresses[0]).ip)
    for bridge in lab.topology.bridges:
        if bridge.host == host and bridge.addresses:
            return str(ipaddress.ip_interface(bridge.addresses[0]).ip)
    raise LabError(f"lab host {host!r} has no address for an etcd member")


def start_etcd_cluster(lab: Lab, hosts: list[str], workdir: str, tls: bool = True,
                       name_prefix: str = "etcd", client_host: str | None = None
                       ) -> EtcdCluster:
    """Start one member per lab host (its first address, ports 2379/2380) with TLS
    material under ``workdir``; returns without waiting (call wait_healthy)."""
    if not hosts:
        raise ValueError("start_etcd_cluster: no hosts given")
    os.makedirs(workdir, exist_ok=True)
    names = [f"{name_prefix}{index}" for index in range(1, len(hosts) + 1)]
    members = {name: _Member(name, host, _first_address(lab, host),
                             os.path.join(workdir, name))
               for name, host in zip(names, hosts, strict=True)}
    scheme = "https" if tls else "http"
    cluster = EtcdCluster(lab=lab, workdir=workdir, tls=tls,
                          client_host=client_host or hosts[0], members=names,
                          endpoints=[f"{scheme}://{m.address}:{CLIENT_PORT}"
                                     for m in members.values()],
                          _members=members)
    if tls:
        pki = _Pki(os.path.join(workdir, "tls"))
        cluster._pki = pki
        cluster.ca = pki.ca
        cluster.root_cert, cluster.root_key = pki.issue("client-root", _client_subject(ROOT_USER))
        for member in members.values():
            member.cert, member.key = pki.issue(f"member-{member.name}",
                                                f"/CN=etcd member {member.name}",
                                                [member.address, "127.0.0.1"])
    for name in names:
        cluster.start(name)
    return cluster


def cluster_summary(cluster: EtcdCluster) -> dict[str, Any]:
    """Members, hosts, addresses and running state (for logs and demo output)."""
    return {name: {"host": cluster.member_host(name),
                   "endpoint": cluster.member_endpoint(name),
                   "running": cluster.is_running(name)} for name in cluster.members}
