"""The macvlan node agent: pod links, DHCP leases that survive restarts, the host shim.

``MacvlanAgent`` serves the plugin's requests (``dcnet.cni.agentproto``) on a root-only
unix socket. For ADD it creates the macvlan directly in the pod's namespace under a
temporary name, renames it to CNI_IFNAME, sets arp_notify, brings it up and starts a
``Runner``: a thread that lives in the pod's namespace and runs pyroute2's
``AsyncDHCPClient`` on the pod's interface; the client's hooks put the leased address,
the default route and (when configured) a host-shim route in place, journal the lease
atomically (``dcnet.cni.leases.Journal``) and let ADD answer. The client renews at T1,
rebinds at T2 and on expiry the agent sets the link down and logs it; a changed address
(a NAK then a new lease, or an ACK for another address) moves the pod to it, new address
first. DEL stops the client, which sends DHCPRELEASE from the leased address over the
pod's own link, then deletes the link.

On start (after a clean stop, a crash or SIGKILL) the agent sends the releases the plugin
queued while it was down, then walks the journal: leases whose namespace is gone are
released (over a temporary macvlan with the pod's MAC) and dropped, expired ones are set
down, and every live one is resumed in BOUND with its timers re-armed from the journal
(a T1 or T2 that passed while the agent was down renews or rebinds at once). Stopping the
agent keeps every lease: pods keep their addresses while it restarts.

Kernel I/O uses ``dcnet.cni.rtnl`` (plain sockets, usable from the DHCP loops' threads,
where pyroute2's synchronous IPRoute cannot run inside a running event loop); the DHCP
protocol is pyroute2's. Namespace switching goes through ``dcnet.sysio.netns``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable

from pyroute2.dhcp import fsm
from pyroute2.dhcp.client import AsyncDHCPClient, ClientConfig
from pyroute2.dhcp.hooks import Trigger, hook
from pyroute2.dhcp.leases import Lease

from dcnet.cni import agentproto, ip4, leases
from dcnet.cni.args import parse_args
from dcnet.cni.config import NetConf, load_conf, runtime_requests
from dcnet.cni.errors import (
    CHECK_FAILED,
    DECODE_FAILURE,
    INTERNAL,
    INVALID_CONFIG,
    LINK_FAILURE,
    NOT_AVAILABLE,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
    CniError,
)
from dcnet.cni.hostgw import Undo
from dcnet.cni.macvlan import delete_pod_link, link_alias
from dcnet.cni.rtnl import AF_NETLINK, NETLINK_ROUTE, Netlink
from dcnet.cni.skel import CmdArgs
from dcnet.cni.version import to_canonical
from dcnet.sysio import netns

TEMP_PREFIX = "dcnt"
RELEASE_PREFIX = "dcnr"
NAK_GRACE = 10.0
STOP_TIMEOUT = 10.0
SO_PEERCRED = 17
IFF_UP = 1


def _fnv(text: str) -> int:
    value = 0xCBF29CE484222325
    for byte in text.encode():
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def temp_name(prefix: str, container_id: str, ifname: str) -> str:
    """A 15-character link name unique per attachment (prefix + 44 bits of FNV-1a)."""
    return f"{prefix}{_fnv(f'{container_id}/{ifname}') >> 20:011x}"


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _pod_netlink(path: str) -> Netlink:
    return Netlink(netns.socket_in(path, AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   NETLINK_ROUTE))


def _netns_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class JournalLease(Lease):
    """pyroute2 lease kept in dcnet's journal (by the runner's hooks), with RFC 2131 timers
    from ``leases.lease_timers``; ``load`` hands the client the lease to resume, if any."""

    resume_from: Lease | None = None

    def dump(self) -> None:
        """Journaling happens in the runner's hooks, after the pod is configured."""

    @classmethod
    def load(cls, interface: str) -> Lease | None:
        return cls.resume_from

    def _timers(self) -> tuple[float | None, float | None]:
        options = self.ack["options"]
        return leases.lease_timers(options.get("lease_time"), options.get("renewal_time"),
                                   options.get("rebinding_time"))

    @property
    def renewal_in(self) -> float | None:
        t1 = self._timers()[0]
        return None if t1 is None else self.obtained + t1 - time.time()

    @property
    def rebinding_in(self) -> float | None:
        t2 = self._timers()[1]
        return None if t2 is None else self.obtained + t2 - time.time()


def lease_from_record(record: dict) -> JournalLease:
    lease = record["lease"]
    return JournalLease(ack=lease["ack"], interface=record["ifname"],
                        server_mac=lease["server_mac"], obtained=float(lease["obtained"]))


class LeaseClient(AsyncDHCPClient):
    """pyroute2's client plus ``resume``: carry on with a journaled, still valid lease."""

    async def resume(self) -> None:
        """From INIT_REBOOT (the lease type loaded the journaled lease) straight to BOUND,
        timers armed from the lease; a T1/T2 already past renews/rebinds now. Unlike a
        REBOOTING request, a server that is down now does not make the client forget a
        lease that is still valid."""
        lease = self.lease
        assert lease is not None and self.state is fsm.State.INIT_REBOOT
        self.state = fsm.State.REBOOTING
        self.state = fsm.State.BOUND
        self.lease = lease  # arms T1/T2/expiry (the setter)
        if lease.expired:
            await self._expire_lease()
        elif lease.rebinding_in is not None and lease.rebinding_in <= 0:
            await self._rebind()
        elif lease.renewal_in is not None and lease.renewal_in <= 0:
            await self._renew()


def client_config(record: dict, lease_type: type, hooks=(), release: bool = True,
                  interface: str | None = None) -> ClientConfig:
    cid = bytes.fromhex(record["clientID"]) if record.get("clientID") else None
    return ClientConfig(interface=interface or record["ifname"], lease_type=lease_type,
                        hooks=hooks, handle_signals=False, release=release, client_id=cid,
                        host_name=record.get("hostname"), vendor_id="dcnet", hook_timeout=5.0)


class Runner:
    """The DHCP client of one attachment, in a thread inside the pod's namespace."""

    def __init__(self, agent: MacvlanAgent, record: dict, resume: Lease | None = None):
        self.agent, self.record, self.resume = agent, record, resume
        self.key = leases.attachment_key(record["containerID"], record["ifname"])
        self.bound = threading.Event()
        self.ready = threading.Event()
        self.finished = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.release_on_stop = False
        self.stopping = False
        self.error: BaseException | None = None
        self.nak_timer: asyncio.TimerHandle | None = None
        self.nl: Netlink | None = None
        self.thread: threading.Thread | None = None

    def log(self, text: str) -> None:
        self.agent.log(f"{self.key}: {text}")

    def start(self) -> None:
        self.thread = netns.start_thread_in(self.record["netns"], self._main,
                                            name=f"dhcp-{self.key}"[:15])

    def alive(self) -> bool:
        return self.thread is not None and not self.finished.is_set()

    def stop(self, release: bool) -> None:
        """Stop the client; with ``release`` it first sends DHCPRELEASE (leased address)."""
        if self.thread is None or self.finished.is_set():
            return
        self.ready.wait(STOP_TIMEOUT)
        self.stopping = True

        def trigger() -> None:
            self.release_on_stop = release
            assert self.stop_event is not None
            self.stop_event.set()
        if self.loop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self.loop.call_soon_threadsafe(trigger)
        self.finished.wait(STOP_TIMEOUT)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:
            self.error = exc
            self.log(f"DHCP client failed: {type(exc).__name__}: {exc}")
        finally:
            self.ready.set()
            self.finished.set()

    async def _run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        self.nl = Netlink()  # this thread lives in the pod's namespace
        try:
            lease_type = type("PodLease", (JournalLease,), {"resume_from": self.resume})
            client = LeaseClient(client_config(self.record, lease_type, self._hooks()))
            async with client:
                self.ready.set()
                if self.resume is not None:
                    await client.resume()
                else:
                    await client.bootstrap()
                await self.stop_event.wait()
                client.config.release = self.release_on_stop
                if self.release_on_stop and client.lease is not None:
                    self.log(f"releasing {client.lease.ip} to {self._server(client.lease)}")
        finally:
            self.nl.close()

    @staticmethod
    def _server(lease: Lease) -> str:
        with contextlib.suppress(Exception):
            return str(lease.server_id)
        return "?"

    def _hooks(self) -> list:
        @hook(Trigger.BOUND)
        async def bound(lease: Lease) -> None:
            self.on_lease(lease, "bound")

        @hook(Trigger.RENEWED)
        async def renewed(lease: Lease) -> None:
            self.on_lease(lease, "renewed")

        @hook(Trigger.REBOUND)
        async def rebound(lease: Lease) -> None:
            self.on_lease(lease, "rebound")

        @hook(Trigger.EXPIRED)
        async def expired(lease: Lease) -> None:
            self.on_expired(lease)

        @hook(Trigger.UNBOUND)
        async def unbound(lease: Lease) -> None:
            self.on_unbound(lease)
        return [bound, renewed, rebound, expired, unbound]

    # ------------------------------------------------------------ hooks (pod netns thread)

    def _link_index(self) -> int | None:
        assert self.nl is not None
        link = self.nl.link(self.record["ifname"])
        return None if link is None else link["index"]

    def _apply(self, index: int, steps: list[tuple[str, str]]) -> None:
        assert self.nl is not None
        for step, value in steps:
            if step == "add-address":
                address, plen = ip4.parse_cidr(value)
                self.nl.replace_address(index, ip4.ip_bytes(address), plen,
                                        ip4.ip_bytes(ip4.broadcast(address, plen)))
            elif step == "del-address":
                address, plen = ip4.parse_cidr(value)
                self.nl.delete_address(index, ip4.ip_bytes(address), plen)
            elif step == "set-gateway":
                self.nl.replace_route(b"\0\0\0\0", 0, ip4.ip_bytes(ip4.parse_ip(value)), index)
            elif step == "del-gateway":
                self.nl.delete_route(b"\0\0\0\0", 0, index)

    def on_lease(self, lease: Lease, how: str) -> None:
        ack = leases.sanitize_ack(lease.ack)
        view = leases.lease_view(ack)
        index = self._link_index()
        if index is None:
            self.log(f"{how} {view['address']} but {self.record['ifname']} is gone")
            return
        self._cancel_nak_timer()
        assert self.nl is not None
        self.nl.set_up(index)
        old = self.record.get("configured")
        # A new address in the old one's subnet is a secondary: with promote_secondaries
        # (set at ADD) deleting the old primary promotes it instead of taking it along.
        self._apply(index, leases.plan_pod_config(old, view))
        wanted, _plen = ip4.parse_cidr(view["address"])
        if not any(a["index"] == index and a["address"] == ip4.ip_bytes(wanted)
                   for a in self.nl.addresses()):
            self._apply(index, leases.plan_pod_config(None, view))
        self.record.update(state=leases.BOUND, configured={
            "address": view["address"], "gateway": view["gateway"]}, dns=view["dns"],
            lease={"ack": ack, "server_mac": lease.server_mac, "obtained": lease.obtained})
        self.agent.journal.write(self.record)
        old_address = (old or {}).get("address")
        if old_address != view["address"]:
            self.agent.shim_route(old_address, view["address"])
            if old_address:
                self.log(f"address changed from {old_address} to {view['address']} ({how})")
        times = leases.record_lease_times(self.record) or {}
        expiry = times.get("expiry")
        self.log(f"{how} {view['address']} from {self._server(lease)}"
                 + (f", expires in {expiry - time.time():.0f}s" if expiry else ""))
        self.bound.set()

    def on_expired(self, lease: Lease) -> None:
        index = self._link_index()
        old = self.record.get("configured") or {}
        if index is not None:
            assert self.nl is not None
            self.nl.set_down(index)
            if old.get("address"):
                self._apply(index, [("del-address", old["address"])])
        self.agent.shim_route(old.get("address"), None)
        self.record.update(state=leases.EXPIRED, configured=None)
        self.agent.journal.write(self.record)
        self.log(f"lease of {lease.ip} expired without a renewal: "
                 f"{self.record['ifname']} set down")

    def on_unbound(self, lease: Lease) -> None:
        if self.stopping:
            return  # DEL: the release follows, then the link goes
        remaining = lease.expiration_in
        grace = NAK_GRACE if remaining is None else max(0.0, min(NAK_GRACE, remaining))
        self.log(f"server refused {lease.ip} (NAK): asking for a new lease, keeping the "
                 f"address at most {grace:.0f}s meanwhile")
        assert self.loop is not None
        self._cancel_nak_timer()
        self.nak_timer = self.loop.call_later(grace, self._drop_after_nak)

    def _cancel_nak_timer(self) -> None:
        if self.nak_timer is not None:
            self.nak_timer.cancel()
            self.nak_timer = None

    def _drop_after_nak(self) -> None:
        self.nak_timer = None
        old = self.record.get("configured") or {}
        index = self._link_index()
        if index is not None and old.get("address"):
            self._apply(index, [("del-address", old["address"])])
        self.agent.shim_route(old.get("address"), None)
        self.record.update(configured=None)
        self.agent.journal.write(self.record)
        self.log(f"no new lease after the NAK: {old.get('address')} removed")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False
    agent: MacvlanAgent

    def verify_request(self, request, client_address) -> bool:
        creds = request.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid != 0:
            self.agent.log(f"refused a connection from uid {uid} (root only)")
        return uid == 0


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock = self.request
        sock.settimeout(30.0)
        try:
            message = agentproto.decode(agentproto.read_line(sock))
        except (OSError, ValueError, ConnectionError) as exc:
            answer = {"proto": agentproto.PROTO, "error": {
                "code": DECODE_FAILURE, "msg": f"bad request: {exc}"}}
        else:
            answer = self.server.agent.serve(message)  # type: ignore[attr-defined]
        with contextlib.suppress(OSError):
            sock.sendall(agentproto.encode(answer))


class MacvlanAgent:
    """The node agent of one macvlan/DHCP network (see the module docstring)."""

    def __init__(self, conf: NetConf, log: Callable[[str], None] | None = None):
        if conf.mode != "macvlan":
            raise CniError(INVALID_CONFIG, f"the DHCP agent serves mode macvlan, not "
                           f"{conf.mode!r}")
        self.conf = conf
        self.journal = leases.Journal(conf.lease_dir)
        self.queue = leases.ReleaseQueue(conf.lease_dir)
        self.log = log or (lambda text: print(f"dcnet-agent: {text}", file=sys.stderr,
                                              flush=True))
        self.runners: dict[str, Runner] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._node_lock = threading.Lock()
        self._node_nl = Netlink()  # bound to the agent's (node) namespace for its life
        self.shim_index: int | None = None
        self.stopping = threading.Event()
        self.server: _Server | None = None

    # ------------------------------------------------------------ helpers

    @contextlib.contextmanager
    def node(self):
        with self._node_lock:
            yield self._node_nl

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def _conf(self, args: CmdArgs) -> NetConf:
        conf = load_conf(args.conf)
        if conf.mode != "macvlan":
            raise CniError(INVALID_CONFIG, f"invalid network config: mode: this agent serves "
                           f"macvlan, not {conf.mode!r}")
        if conf.name != self.conf.name:
            raise CniError(INVALID_CONFIG, f"invalid network config: name: this agent serves "
                           f"network {self.conf.name!r}, not {conf.name!r}")
        return conf

    def master_link(self, conf: NetConf) -> dict:
        """The master link: configured, or the interface of the default route."""
        with self.node() as nl:
            if conf.master is None:
                route = next((r for r in nl.routes() if r["plen"] == 0 and r["oif"]), None)
                if route is None:
                    raise CniError(TRY_AGAIN_LATER, "no master given and no default route "
                                   "to take it from")
                link = next((li for li in nl.links() if li["index"] == route["oif"]), None)
                name = f"default-route interface #{route['oif']}"
            else:
                link = nl.link(conf.master)
                name = conf.master
        if link is None:
            raise CniError(TRY_AGAIN_LATER, f"master {name} does not exist on this node")
        return link

    def shim_route(self, old_cidr: str | None, new_cidr: str | None) -> None:
        """Keep the host shim's /32 route per pod address (no-op without a shim)."""
        if self.shim_index is None or old_cidr == new_cidr:
            return
        with self.node() as nl:
            if old_cidr:
                nl.delete_route(ip4.ip_bytes(ip4.parse_cidr(old_cidr)[0]), 32, self.shim_index)
            if new_cidr:
                nl.replace_route(ip4.ip_bytes(ip4.parse_cidr(new_cidr)[0]), 32, None,
                                 self.shim_index, protocol=self.conf.route_protocol)

    # ------------------------------------------------------------ requests

    def serve(self, message: dict) -> dict:
        """One protocol request -> one answer (never raises)."""
        command = message.get("command")
        handlers = {"ADD": self.add, "DEL": self.delete, "CHECK": self.check,
                    "STATUS": self.status, "GC": self.gc, "PING": self.ping}
        try:
            if command not in handlers or not isinstance(message.get("conf"), dict):
                raise CniError(DECODE_FAILURE, f"bad request: command {command!r}")
            env = message.get("env") or {}
            result = handlers[command](CmdArgs(command, env, message["conf"]))
            return {"proto": agentproto.PROTO, "result": result or {}}
        except CniError as exc:
            return {"proto": agentproto.PROTO, "error": exc.to_json("1.1.0")}
        except Exception as exc:
            self.log(f"{command} failed: {type(exc).__name__}: {exc}")
            return {"proto": agentproto.PROTO, "error": {
                "code": INTERNAL, "msg": f"{type(exc).__name__}: {exc}"}}

    def ping(self, args: CmdArgs) -> dict:
        return {"agent": os.getpid(), "leases": len(self.runners)}

    # ------------------------------------------------------------ ADD

    def add(self, args: CmdArgs) -> dict:
        conf = self._conf(args)
        cni_args = parse_args(args.args)
        requested_ip, requested_mac = runtime_requests(conf, cni_args)
        if requested_ip is not None:
            raise CniError(INVALID_CONFIG, "invalid network config: runtimeConfig.ips: "
                           "in macvlan mode addresses come from DHCP")
        prev = to_canonical(conf.prev_result) if conf.prev_result else None
        key = leases.attachment_key(args.container_id, args.ifname)
        with self._lock(key):
            runner = self.runners.get(key)
            if runner is not None and runner.alive():
                raise CniError(LINK_FAILURE, f"container {args.container_id} already has "
                               f"{args.ifname} on network {conf.name}")
            master = self.master_link(conf)
            if conf.mtu_explicit and conf.mtu > (master["mtu"] or 0):
                raise CniError(INVALID_CONFIG, f"invalid network config: mtu: {conf.mtu} "
                               f"exceeds the MTU {master['mtu']} of master {master['name']}")
            mtu = conf.mtu if conf.mtu_explicit else master["mtu"]
            try:
                pod_fd = os.open(args.netns, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise CniError(UNKNOWN_CONTAINER,
                               f"network namespace {args.netns} does not exist") from None
            undo = Undo()
            try:
                return self._add(args, conf, cni_args, master, mtu, requested_mac, pod_fd,
                                 undo, prev)
            except BaseException:
                for line in undo.unwind():
                    self.log(f"ADD undo failed: {line}")
                raise
            finally:
                os.close(pod_fd)

    def _add(self, args: CmdArgs, conf: NetConf, cni_args: dict, master: dict, mtu: int,
             requested_mac: str | None, pod_fd: int, undo: Undo, prev: dict | None) -> dict:
        ifname, cid = args.ifname, args.container_id
        alias = link_alias(conf.name, cid, ifname)
        temporary = temp_name(TEMP_PREFIX, cid, ifname)
        pod = _pod_netlink(args.netns)
        try:
            if pod.link(ifname) is not None:
                raise CniError(LINK_FAILURE, f"interface {ifname} already exists in "
                               f"{args.netns}")
            with self.node() as nl:
                try:
                    nl.add_macvlan(temporary, master["index"], conf.macvlan_mode, pod_fd, mtu,
                                   requested_mac, alias)
                except OSError as exc:
                    raise CniError(LINK_FAILURE, f"creating a {conf.macvlan_mode} macvlan on "
                                   f"{master['name']} failed", str(exc)) from None
            undo.push(f"delete {temporary}", lambda: pod.delete_link(temporary))
            link = pod.link(temporary)
            if link is None:
                raise CniError(LINK_FAILURE, f"{temporary} vanished from {args.netns}")
            try:
                pod.rename(link["index"], ifname, alias)
            except OSError as exc:
                raise CniError(LINK_FAILURE, f"renaming {temporary} to {ifname} failed",
                               str(exc)) from None
            undo.push(f"delete {ifname}", lambda: delete_pod_link(args.netns, ifname, alias))
            for key in ("arp_notify", "promote_secondaries"):  # see Runner.on_lease
                netns.call_here_in(args.netns, _write,
                                   f"/proc/sys/net/ipv4/conf/{ifname}/{key}", "1")
            with contextlib.suppress(OSError):  # IPv6 may be disabled in the pod
                netns.call_here_in(args.netns, _write,
                                   f"/proc/sys/net/ipv6/conf/{ifname}/ndisc_notify", "1")
            pod.set_up(link["index"])
            link = pod.link(ifname) or link
        finally:
            pod.close()
        pod_namespace = cni_args.get("K8S_POD_NAMESPACE")
        pod_name = cni_args.get("K8S_POD_NAME")
        cid_bytes = leases.client_id(conf.client_id, pod_namespace, pod_name, ifname, cid)
        record = leases.new_record(
            conf.name, cid, ifname, args.netns, _netns_identity(args.netns), master["name"],
            conf.macvlan_mode, link["mac"], cid_bytes.hex() if cid_bytes else None,
            leases.hostname_option(pod_name) if conf.send_hostname else None)
        self.journal.write(record)
        undo.push("remove journal record", lambda: self.journal.remove(cid, ifname))
        runner = Runner(self, record)
        key = runner.key
        self.runners[key] = runner
        undo.push("stop the DHCP client", lambda: self._forget(key, release=True))
        runner.start()
        deadline = time.monotonic() + conf.dhcp_timeout
        while not runner.bound.wait(0.05):
            if runner.finished.is_set() or time.monotonic() > deadline:
                why = (f"the DHCP client failed: {runner.error}" if runner.finished.is_set()
                       else f"no DHCP lease within {conf.dhcp_timeout}s")
                raise CniError(TRY_AGAIN_LATER, f"{why} ({ifname} on master {master['name']})",
                               "is a DHCP server answering on that segment?")
        return self._result(args, record, mtu, prev)

    @staticmethod
    def _result(args: CmdArgs, record: dict, mtu: int, prev: dict | None) -> dict:
        result = prev or {"interfaces": [], "ips": [], "routes": [], "dns": {}}
        index = len(result["interfaces"])
        result["interfaces"].append({"name": args.ifname, "mac": record["mac"], "mtu": mtu,
                                     "sandbox": args.netns})
        configured = record["configured"]
        ip_entry = {"address": configured["address"], "interface": index}
        if configured.get("gateway"):
            ip_entry["gateway"] = configured["gateway"]
            result["routes"].append({"dst": "0.0.0.0/0", "gw": configured["gateway"]})
        result["ips"].append(ip_entry)
        if record.get("dns"):
            result["dns"] = dict(result.get("dns") or {}, **record["dns"])
        return result

    def _forget(self, key: str, release: bool) -> None:
        runner = self.runners.pop(key, None)
        if runner is not None:
            runner.stop(release)

    # ------------------------------------------------------------ DEL

    def delete(self, args: CmdArgs) -> None:
        conf = self._conf(args)
        parse_args(args.args)
        key = leases.attachment_key(args.container_id, args.ifname)
        with self._lock(key):
            self.teardown(conf, args.container_id, args.ifname, args.netns)

    def teardown(self, conf: NetConf, cid: str, ifname: str, netns_path: str | None) -> dict:
        """Release the lease (from its address), delete the link, forget the attachment.
        Best effort and repeatable: whatever is already gone is skipped."""
        key = leases.attachment_key(cid, ifname)
        record = None
        with contextlib.suppress(leases.JournalError):
            record = self.journal.read(cid, ifname)
        runner = self.runners.pop(key, None)
        released = None
        if runner is not None and runner.alive():
            runner.stop(release=True)
            released = "client"
        elif record is not None and self._releasable(record):
            released = self.release_offline(record)
        path = netns_path or (record or {}).get("netns")
        if path and os.path.exists(path):
            with contextlib.suppress(OSError, RuntimeError):
                delete_pod_link(path, ifname, link_alias(conf.name, cid, ifname))
        if record is not None:
            self.shim_route((record.get("configured") or {}).get("address"), None)
        self.journal.remove(cid, ifname)
        self.queue.remove(cid, ifname)
        return {"containerID": cid, "ifname": ifname, "released": released}

    @staticmethod
    def _releasable(record: dict) -> bool:
        if record["state"] != leases.BOUND or not record.get("lease"):
            return False
        expiry = (leases.record_lease_times(record) or {}).get("expiry")
        return expiry is None or expiry > time.time()

    def release_offline(self, record: dict) -> str | None:
        """Send DHCPRELEASE for a journaled lease with no client running: over the pod's
        link if it is still there, else over a temporary macvlan carrying the pod's MAC
        on the master. Returns how it was sent, None when it could not be."""
        lease = lease_from_record(record)
        lease_type = type("ReleasedLease", (JournalLease,), {"resume_from": lease})
        path = record["netns"]
        if _netns_identity(path) == tuple(record.get("netnsID") or ()) and path:
            try:
                with _pod_netlink(path) as pod:
                    link = pod.link(record["ifname"])
                if link is not None and link["mac"] == record["mac"]:
                    done = threading.Event()
                    errors: list[BaseException] = []
                    netns.start_thread_in(path, _release_thread,
                                          client_config(record, lease_type), done, errors)
                    done.wait(STOP_TIMEOUT)
                    if not errors:
                        self.log(f"released {lease.ip} over the pod's {record['ifname']}")
                        return "pod link"
            except (OSError, RuntimeError) as exc:
                self.log(f"release over the pod's link failed: {exc}")
        name = temp_name(RELEASE_PREFIX, record["containerID"], record["ifname"])
        try:
            with self.node() as nl:
                master = nl.link(record["master"])
                if master is None:
                    self.log(f"cannot release {lease.ip}: master {record['master']} is gone")
                    return None
                nl.delete_link(name)
                mode = "passthru" if record["mode"] == "passthru" else "bridge"
                nl.add_macvlan(name, master["index"], mode, mac=record["mac"])
                temp = nl.link(name)
                assert temp is not None
                nl.set_up(temp["index"])
            done = threading.Event()
            errors = []
            _release_thread(client_config(record, lease_type, interface=name), done, errors)
            if errors:
                raise errors[0]
            self.log(f"released {lease.ip} over temporary {name} ({record['mac']})")
            return "temporary link"
        except Exception as exc:
            self.log(f"cannot release {lease.ip}: {type(exc).__name__}: {exc}")
            return None
        finally:
            with self.node() as nl, contextlib.suppress(OSError):
                nl.delete_link(name)

    # ------------------------------------------------------------ CHECK

    def check(self, args: CmdArgs) -> None:
        conf = self._conf(args)
        parse_args(args.args)
        if not conf.prev_result:
            raise CniError(INVALID_CONFIG, "CHECK needs prevResult (the cached ADD result)")
        prev = to_canonical(conf.prev_result)

        def fail(problem: str) -> CniError:
            return CniError(CHECK_FAILED, f"CHECK failed: {problem}")
        ours = [i for i, iface in enumerate(prev["interfaces"])
                if iface.get("name") == args.ifname and iface.get("sandbox") == args.netns]
        if not ours:
            raise fail(f"prevResult has no interface {args.ifname} in {args.netns}")
        iface = prev["interfaces"][ours[-1]]
        ips = [ip for ip in prev["ips"] if ip.get("interface") == ours[-1]]
        if not ips:
            raise fail(f"prevResult has no address on {args.ifname}")
        record = self.journal.read(args.container_id, args.ifname)
        if record is None:
            raise fail(f"no lease journaled for {args.container_id}/{args.ifname}")
        if record["state"] != leases.BOUND:
            raise fail(f"the lease is {record['state']}")
        configured = record.get("configured") or {}
        if configured.get("address") != ips[0]["address"]:
            raise fail(f"the lease is now {configured.get('address')}, prevResult has "
                       f"{ips[0]['address']}")
        runner = self.runners.get(leases.attachment_key(args.container_id, args.ifname))
        if runner is None or not runner.alive():
            raise fail("no DHCP client is keeping the lease")
        if not os.path.exists(args.netns):
            raise CniError(UNKNOWN_CONTAINER, f"network namespace {args.netns} does not exist")
        address, plen = ip4.parse_cidr(configured["address"])
        with _pod_netlink(args.netns) as pod:
            link = pod.link(args.ifname)
            if link is None or link["kind"] != "macvlan":
                raise fail(f"{args.ifname} is not a macvlan in {args.netns}")
            if iface.get("mac") and link["mac"] != iface["mac"].lower():
                raise fail(f"{args.ifname} has MAC {link['mac']}, prevResult says "
                           f"{iface['mac']}")
            if not link["flags"] & IFF_UP:
                raise fail(f"{args.ifname} is down")
            if not any(a["index"] == link["index"] and a["address"] == ip4.ip_bytes(address)
                       and a["plen"] == plen for a in pod.addresses()):
                raise fail(f"{args.ifname} lacks {configured['address']}")
            gateway = configured.get("gateway")
            if gateway and not any(
                    r["plen"] == 0 and r["gateway"] == ip4.ip_bytes(ip4.parse_ip(gateway))
                    and r["oif"] == link["index"] for r in pod.routes()):
                raise fail(f"no default route via {gateway} on {args.ifname}")

    # ------------------------------------------------------------ STATUS and GC

    def status(self, args: CmdArgs) -> None:
        conf = self._conf(args)
        try:
            master = self.master_link(conf)
        except CniError as exc:
            raise CniError(NOT_AVAILABLE, f"dcnet cannot serve ADD: {exc.msg}") from None
        if not master["flags"] & IFF_UP:
            raise CniError(NOT_AVAILABLE, f"dcnet cannot serve ADD: master {master['name']} "
                           f"is down")

    def gc(self, args: CmdArgs) -> dict:
        conf = self._conf(args)
        if conf.valid_attachments is None:
            raise CniError(INVALID_CONFIG, "GC needs cni.dev/valid-attachments")
        valid = {leases.attachment_key(c, i) for c, i in conf.valid_attachments
                 if "+" not in c}
        records, problems = self.journal.records()
        freed, errors = [], list(problems)
        for record in records:
            key = leases.attachment_key(record["containerID"], record["ifname"])
            if key in valid or record["network"] != conf.name:
                continue
            with self._lock(key):
                try:
                    freed.append(self.teardown(conf, record["containerID"], record["ifname"],
                                               record["netns"]))
                except Exception as exc:
                    errors.append(f"{key}: {type(exc).__name__}: {exc}")
        return {"gc": conf.name, "released": freed, "errors": errors}

    # ------------------------------------------------------------ start, resume, run

    def setup_shim(self) -> None:
        """Create (or keep) the host shim macvlan with its address; sweep stale routes."""
        shim = self.conf.host_shim
        if not shim:
            return
        master = self.master_link(self.conf)
        with self.node() as nl:
            link = nl.link(shim["name"])
            if link is None:
                nl.add_macvlan(shim["name"], master["index"], "bridge")
                link = nl.link(shim["name"])
                self.log(f"created host shim {shim['name']} on {master['name']}")
            assert link is not None
            if shim["address"]:
                address, plen = ip4.parse_cidr(shim["address"])
            else:
                mine = [a for a in nl.addresses() if a["index"] == master["index"]]
                if not mine:
                    raise CniError(TRY_AGAIN_LATER, f"master {master['name']} has no IPv4 "
                                   "address for the host shim (give hostShim.address)")
                address, plen = int.from_bytes(mine[0]["address"], "big"), 32
            if not any(a["index"] == link["index"] and a["address"] == ip4.ip_bytes(address)
                       for a in nl.addresses()):
                nl.replace_address(link["index"], ip4.ip_bytes(address), plen, None)
            nl.set_up(link["index"])
            self.shim_index = link["index"]

    def sweep_shim_routes(self, wanted: set[str]) -> None:
        if self.shim_index is None:
            return
        with self.node() as nl:
            for route in nl.routes():
                if (route["oif"] == self.shim_index and route["plen"] == 32
                        and route["protocol"] == self.conf.route_protocol):
                    dst = ip4.fmt_ip(int.from_bytes(route["dst"], "big"))
                    if dst not in wanted:
                        nl.delete_route(route["dst"], 32, self.shim_index)
                        self.log(f"removed stale shim route {dst}/32")

    def process_release_queue(self) -> None:
        for item in self.queue.items():
            cid, ifname = item["containerID"], item["ifname"]
            key = leases.attachment_key(cid, ifname)
            with self._lock(key):
                self.log(f"{key}: sending the release queued while the agent was away")
                self.teardown(self.conf, cid, ifname, item.get("netns"))

    def netns_alive(self, record: dict) -> bool:
        wanted = tuple(record.get("netnsID") or ())
        return bool(wanted) and _netns_identity(record["netns"]) == wanted

    def resume(self) -> None:
        """Pick up every journaled lease (see the module docstring)."""
        records, problems = self.journal.records()
        for problem in problems:
            self.log(f"journal: skipping {problem}")
        for record in records:
            if record["network"] != self.conf.name:
                continue
            key = leases.attachment_key(record["containerID"], record["ifname"])
            with self._lock(key):
                self._resume_one(key, record)
        self.sweep_shim_routes({(r.get("configured") or {}).get("address", "/").split("/")[0]
                                for r in self.journal.records()[0]})

    def _resume_one(self, key: str, record: dict) -> None:
        if key in self.runners:
            return
        if not self.netns_alive(record):
            self.log(f"{key}: namespace {record['netns']} is gone: releasing and dropping")
            self.teardown(self.conf, record["containerID"], record["ifname"], None)
            return
        alias = link_alias(record["network"], record["containerID"], record["ifname"])
        with _pod_netlink(record["netns"]) as pod:
            link = pod.link(record["ifname"])
        if record["state"] == leases.PENDING or link is None or link["alias"] != alias:
            why = "was never bound" if record["state"] == leases.PENDING else "lost its link"
            self.log(f"{key}: {why}: dropping")
            self.teardown(self.conf, record["containerID"], record["ifname"],
                          record["netns"] if record["state"] == leases.PENDING else None)
            return
        if record["state"] == leases.EXPIRED:
            return  # kept for CHECK (which fails) and DEL
        expiry = (leases.record_lease_times(record) or {}).get("expiry")
        if expiry is not None and expiry <= time.time():
            self._expire_offline(record, link["index"])
            return
        runner = Runner(self, record, resume=lease_from_record(record))
        self.runners[key] = runner
        runner.start()
        self.log(f"{key}: resumed {(record.get('configured') or {}).get('address')}")

    def _expire_offline(self, record: dict, index: int) -> None:
        address = (record.get("configured") or {}).get("address")
        with _pod_netlink(record["netns"]) as pod:
            pod.set_down(index)
            if address:
                parsed, plen = ip4.parse_cidr(address)
                pod.delete_address(index, ip4.ip_bytes(parsed), plen)
        self.shim_route(address, None)
        record.update(state=leases.EXPIRED, configured=None)
        self.journal.write(record)
        self.log(f"{record['containerID']}+{record['ifname']}: lease of {address} expired "
                 f"while the agent was away: link set down")

    def housekeeping(self) -> None:
        """Send queued releases; release and drop leases whose namespace went away."""
        self.process_release_queue()
        for key, runner in list(self.runners.items()):
            if not self.netns_alive(runner.record):
                with self._lock(key):
                    if self.runners.get(key) is runner:
                        self.log(f"{key}: namespace {runner.record['netns']} is gone: "
                                 "releasing and dropping")
                        self.teardown(self.conf, runner.record["containerID"],
                                      runner.record["ifname"], None)

    def listen(self) -> None:
        path = self.conf.socket_path
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # a dead agent's socket
            else:
                raise RuntimeError(f"another dcnet-agent is serving {path}")
            finally:
                probe.close()
        old_umask = os.umask(0o177)
        try:
            self.server = _Server(path, _Handler)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        self.server.agent = self
        threading.Thread(target=self.server.serve_forever, name="agent-socket",
                         daemon=True).start()
        self.log(f"serving {path}")

    def start(self) -> None:
        self.setup_shim()
        self.process_release_queue()
        self.resume()
        self.listen()

    def request_stop(self) -> None:
        self.stopping.set()

    def run(self, sweep: float = 5.0) -> None:
        """Start, then do housekeeping every ``sweep`` seconds until ``request_stop``."""
        self.start()
        try:
            while not self.stopping.wait(sweep):
                try:
                    self.housekeeping()
                except Exception as exc:
                    self.log(f"housekeeping failed: {type(exc).__name__}: {exc}")
        finally:
            self.close()

    def close(self) -> None:
        """Stop serving; stop every client WITHOUT releasing (the leases stay journaled)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.conf.socket_path)
            self.server = None
        for key in list(self.runners):
            self._forget(key, release=False)
        self._node_nl.close()


def _release_thread(config: ClientConfig, done: threading.Event,
                    errors: list[BaseException]) -> None:
    """Open a client on the lease and leave at once: pyroute2 sends the DHCPRELEASE."""
    async def release() -> None:
        async with LeaseClient(config):
            pass
    try:
        asyncio.run(release())
    except BaseException as exc:
        errors.append(exc)
    finally:
        done.set()
