"""Building and tearing down a network-namespace lab from a Topology.

It owns the ``Lab`` context manager: it writes the run's state file, creates
the namespaces, loopbacks, sysctls, bridges, veths, addresses, routes and
processes in that order while recording an undo stack, and unwinds that stack
on exit, on an exception, on Ctrl-C and on SIGTERM (a handler is installed
while a lab is live in the main thread). Nothing is created in the root
namespace: every object lives in a namespace named ``<prefix>-<host>``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from pyroute2 import IPRoute

from dcnet.lab.linkwait import CARRIER_WAIT, wait_carrier
from dcnet.lab.topology import Bridge, Endpoint, Process, Route, Topology, Veth
from dcnet.sysio import netns as netns_mod
from dcnet.sysio import proc
from dcnet.sysio.files import atomic_write
from dcnet.undo import Undo

STATE_DIR = "/run/dcnet-lab"
PREFIX_STEM = "dl"
IFA_F_NODAD = 0x02
TCP_LISTEN = "0A"


class LabError(RuntimeError):
    """Base class of lab failures."""


class LabBuildError(LabError):
    """Building failed; everything built so far has been undone."""


class LabTeardownError(LabError):
    """Some teardown steps failed; ``errors`` lists them (the others still ran)."""

    def __init__(self, prefix: str, errors: list[str]):
        self.errors = list(errors)
        super().__init__(f"lab {prefix}: teardown errors:\n  " + "\n  ".join(errors))


class LabTerminated(SystemExit):
    """Raised in the main thread when SIGTERM arrives while a lab is live (exit 143)."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


def new_prefix() -> str:
    """A short per-run id: 'dl' + 5 hex digits."""
    return PREFIX_STEM + secrets.token_hex(3)[:5]


def state_path(prefix: str) -> str:
    return os.path.join(STATE_DIR, f"{prefix}.json")


class Lab:
    """A live topology; use as ``with Lab(topology) as lab:``."""

    def __init__(
        self,
        topology: Topology | Mapping[str, Any],
        prefix: str | None = None,
        keep_logs: bool = False,
    ):
        self.topology = _as_topology(topology)
        self.prefix = prefix or new_prefix()
        netns_mod.check_name(self.prefix)
        self.keep_logs = keep_logs
        self.log_dir: str | None = None
        self._undo = Undo()
        self._iproutes: dict[str, IPRoute] = {}
        self._processes: dict[str, subprocess.Popen] = {}
        self._previous_sigterm: Any = None
        self._sigterm_installed = False
        self._created = time.time()

    # ------------------------------------------------------------ context manager

    def __enter__(self) -> Lab:
        self.build()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self.teardown()
        except LabTeardownError as teardown_error:
            if exc is None:
                raise
            exc.add_note(str(teardown_error))
        return False

    # ------------------------------------------------------------ naming helpers

    def netns(self, host: str) -> str:
        """The real namespace name of ``host``."""
        if host not in self.topology.host_names():
            raise KeyError(f"lab {self.prefix} has no host {host!r}")
        return f"{self.prefix}-{host}"

    @property
    def netns_names(self) -> list[str]:
        return [self.netns(host) for host in self.topology.host_names()]

    @property
    def state_file(self) -> str:
        return state_path(self.prefix)

    def address(self, host: str, ifname: str) -> str:
        """The first IP address (without prefix length) configured on host/ifname."""
        addresses = self.topology.addresses_of(host, ifname)
        if not addresses:
            raise KeyError(f"interface {ifname!r} on host {host!r} has no address")
        return str(ipaddress.ip_interface(addresses[0]).ip)

    # ------------------------------------------------------------ runtime helpers

    def iproute(self, host: str) -> IPRoute:
        """A cached IPRoute bound to host's namespace, closed at teardown."""
        if host not in self._iproutes:
            handle = netns_mod.iproute(self.netns(host))
            self._iproutes[host] = handle
            self._push(f"close netlink handle of {host}", lambda: self._close_iproute(host))
        return self._iproutes[host]

    def run(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess:
        """Run argv inside host (see dcnet.sysio.proc.run for keyword arguments)."""
        return proc.run(argv, netns=self.netns(host), **kwargs)

    def start(
        self,
        host: str,
        argv: Sequence[str],
        name: str | None = None,
        log_path: str | None = None,
    ) -> subprocess.Popen:
        """Start argv inside host in the background (returns once it runs there)."""
        name = name or f"{host}-{len(self._processes)}"
        if name in self._processes:
            raise LabError(f"lab {self.prefix}: a process named {name!r} already exists")
        log_path = log_path or self._log_path(name)
        popen = proc.start(argv, netns=self.netns(host), log_path=log_path)
        self._processes[name] = popen
        self._push(f"stop process {name} (pid {popen.pid})", lambda: proc.stop(popen, 3.0))
        self._write_state()
        # Return only once the child has switched into the host's namespace, so callers
        # (and the teardown's "no process left in the namespace" check) see it there.
        netns_mod.wait_entered(self.netns(host), popen.pid)
        return popen

    def process(self, name: str) -> subprocess.Popen:
        """The Popen of a process started by name (topology processes included)."""
        return self._processes[name]

    def defer(self, description: str, action: Callable[[], Any]) -> None:
        """Run ``action`` at teardown, before undoing what was built until now (e.g. to
        close clients of daemons the lab runs); its failure is a teardown error."""
        self._push(description, action)

    def call(self, host: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a Python callable inside host's namespace (in a helper thread)."""
        return netns_mod.run_in(self.netns(host), func, *args, **kwargs)

    def sysctl(self, host: str, key: str, value: object = None) -> str:
        """Read (and first write, when value is given) a sysctl inside host."""
        if value is not None:
            netns_mod.sysctl_set(self.netns(host), key, value)
        return netns_mod.sysctl_get(self.netns(host), key)

    # ------------------------------------------------------------ build

    def build(self) -> None:
        """Create everything; on failure undo what was built and raise LabBuildError."""
        if self._undo:
            raise LabError(f"lab {self.prefix} is already built")
        self._install_sigterm_handler()
        current = "starting"
        try:
            for description, action in self._build_steps():
                current = description
                action()
        except BaseException as exc:
            self._fail_build(current, exc)

    def _build_steps(self) -> Iterator[tuple[str, Callable[[], None]]]:
        topo = self.topology
        yield "write state file", self._create_state_file
        yield "create log directory", self._create_log_dir
        for host in topo.hosts:
            yield f"create namespace for host {host.name}", lambda h=host.name: self._add_host(h)
            for key, value in host.sysctls:
                yield (f"set sysctl {key}={value} on {host.name}",
                       lambda h=host.name, k=key, v=value: self.sysctl(h, k, v))
        for bridge in topo.bridges:
            yield (f"create bridge {bridge.name} on {bridge.host}",
                   lambda b=bridge: self._add_bridge(b))
        for index, link in enumerate(topo.links):
            yield f"create veth links[{index}]", lambda v=link: self._add_veth(v)
        for bridge in topo.bridges:
            yield (f"configure bridge {bridge.name} on {bridge.host}",
                   lambda b=bridge: self._configure(b.host, b.name, b.addresses))
        for end in topo.endpoints():
            yield (f"configure {end.ifname} on {end.host}",
                   lambda e=end: self._configure(e.host, e.ifname, e.addresses))
        yield "wait for carrier on every link", self._wait_carrier
        for index, route in enumerate(topo.routes):
            yield f"add routes[{index}] on {route.host}", lambda r=route: self._add_route(r)
        for process in topo.processes:
            yield f"start process {process.name} on {process.host}", lambda p=process: (
                self._start_process(p))

    def _fail_build(self, step: str, exc: BaseException) -> None:
        errors = self._unwind_with_signals_deferred()
        self._restore_sigterm_handler()
        if not isinstance(exc, Exception):
            raise exc
        message = f"lab {self.prefix}: building failed at step '{step}': {exc}"
        if errors:
            message += "\n  while undoing: " + "\n  while undoing: ".join(errors)
        raise LabBuildError(message) from exc

    def _push(self, description: str, action: Callable[[], Any]) -> None:
        self._undo.push(description, action)

    def _create_state_file(self) -> None:
        os.makedirs(STATE_DIR, exist_ok=True)
        if os.path.exists(self.state_file):
            raise LabError(f"state file {self.state_file} already exists (prefix in use)")
        self._write_state()
        self._push(f"remove state file {self.state_file}", self._remove_state_file)

    def _create_log_dir(self) -> None:
        self.log_dir = tempfile.mkdtemp(prefix=f"dcnet-lab-{self.prefix}-")
        self._write_state()
        if not self.keep_logs:
            self._push(f"remove log directory {self.log_dir}",
                       lambda: shutil.rmtree(self.log_dir, ignore_errors=True))

    def _log_path(self, name: str) -> str | None:
        return os.path.join(self.log_dir, f"{name}.log") if self.log_dir else None

    def _add_host(self, host: str) -> None:
        name = self.netns(host)
        netns_mod.create(name)
        self._push(f"remove namespace {name}", lambda: remove_namespace_and_processes(name))
        ipr = self.iproute(host)
        ipr.link("set", index=_index(ipr, "lo"), state="up")

    def _add_bridge(self, bridge: Bridge) -> None:
        ipr = self.iproute(bridge.host)
        ipr.link("add", ifname=bridge.name, kind="bridge")
        if bridge.mtu:
            ipr.link("set", index=_index(ipr, bridge.name), mtu=bridge.mtu)

    def _add_veth(self, link: Veth) -> None:
        peer: dict[str, Any] = {"ifname": link.b.ifname}
        if link.b.host != link.a.host:
            peer["net_ns_fd"] = self.netns(link.b.host)
        self.iproute(link.a.host).link("add", ifname=link.a.ifname, kind="veth", peer=peer)
        for end in (link.a, link.b):
            self._attach_endpoint(end)

    def _attach_endpoint(self, end: Endpoint) -> None:
        ipr = self.iproute(end.host)
        settings: dict[str, Any] = {}
        if end.mtu:
            settings["mtu"] = end.mtu
        if end.bridge:
            settings["master"] = _index(ipr, end.bridge)
        if settings:
            ipr.link("set", index=_index(ipr, end.ifname), **settings)

    def _configure(self, host: str, ifname: str, addresses: Sequence[str]) -> None:
        ipr = self.iproute(host)
        index = _index(ipr, ifname)
        for text in addresses:
            address = ipaddress.ip_interface(text)
            extra = {"flags": IFA_F_NODAD} if address.version == 6 else {}
            ipr.addr("add", index=index, address=str(address.ip),
                     prefixlen=address.network.prefixlen, **extra)
        ipr.link("set", index=index, state="up")

    def _wait_carrier(self) -> None:
        """Every veth end and every bridge with ports operationally up (issue #17)."""
        ends = [(end.host, end.ifname, end.bridge) for end in self.topology.endpoints()]
        bridges = [(b.host, b.name) for b in self.topology.bridges]
        wait_carrier(self.iproute, ends, bridges, CARRIER_WAIT)

    def _add_route(self, route: Route) -> None:
        ipr = self.iproute(route.host)
        spec: dict[str, Any] = {}
        if route.dst != "default":
            spec["dst"] = route.dst
        version = _route_version(route)
        spec["family"] = socket.AF_INET6 if version == 6 else socket.AF_INET
        if route.via:
            spec["gateway"] = route.via
        if route.dev:
            spec["oif"] = _index(ipr, route.dev)
        if route.table is not None:
            spec["table"] = route.table
        if route.metric is not None:
            spec["priority"] = route.metric
        ipr.route("add", **spec)

    def _start_process(self, process: Process) -> None:
        popen = self.start(process.host, process.argv, name=process.name)
        if process.ready_tcp_port is not None:
            self._wait_tcp_ready(process, popen)

    def _wait_tcp_ready(self, process: Process, popen: subprocess.Popen) -> None:
        deadline = time.monotonic() + process.ready_timeout
        port = process.ready_tcp_port
        while time.monotonic() < deadline:
            if popen.poll() is not None:
                raise LabError(f"process {process.name} exited with {popen.returncode} before "
                               f"listening on tcp/{port}{self._log_tail(process.name)}")
            if self.call(process.host, _is_tcp_listening, port):
                return
            time.sleep(0.05)
        raise LabError(f"process {process.name} not listening on tcp/{port} after "
                       f"{process.ready_timeout}s{self._log_tail(process.name)}")

    def _log_tail(self, name: str) -> str:
        path = self._log_path(name)
        if not path or not os.path.exists(path):
            return ""
        with open(path, errors="replace") as handle:
            tail = handle.read()[-1000:].strip()
        return f"; log tail:\n{tail}" if tail else ""

    # ------------------------------------------------------------ teardown

    def teardown(self) -> None:
        """Undo everything in reverse; idempotent; raises LabTeardownError at the end."""
        errors = self._unwind_with_signals_deferred()
        self._restore_sigterm_handler()
        if errors:
            raise LabTeardownError(self.prefix, errors)

    def _unwind_with_signals_deferred(self) -> list[str]:
        with proc.signals_deferred():
            return self._unwind()

    def _unwind(self) -> list[str]:
        return self._undo.unwind()

    def _close_iproute(self, host: str) -> None:
        handle = self._iproutes.pop(host, None)
        if handle is not None:
            handle.close()

    # ------------------------------------------------------------ state file

    def _state(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "owner_pid": os.getpid(),
            "owner_start_time": proc.start_time(os.getpid()),
            "created": self._created,
            "netns": self.netns_names,
            "log_dir": self.log_dir,
            "processes": [
                {"name": name, "pid": popen.pid, "start_time": proc.start_time(popen.pid)}
                for name, popen in self._processes.items()
            ],
        }

    def _write_state(self) -> None:
        atomic_write(self.state_file, json.dumps(self._state(), indent=2), fsync=False)

    def _remove_state_file(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.state_file)

    # ------------------------------------------------------------ SIGTERM

    def _install_sigterm_handler(self) -> None:
        """Turn SIGTERM into an exception; a previous Python handler (e.g. pytest's) wins."""
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        owner = os.getpid()

        def on_sigterm(signum: int, frame: Any) -> None:
            if os.getpid() != owner:     # a forked helper (pyroute2's netns proxy): never
                proc.die_by_default(signum)   # tear the lab down from there: end
            if callable(previous):
                previous(signum, frame)
            raise LabTerminated()

        self._previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)
        self._sigterm_installed = True

    def _restore_sigterm_handler(self) -> None:
        if self._sigterm_installed:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._sigterm_installed = False


# ---------------------------------------------------------------- module helpers


def _as_topology(topology: Topology | Mapping[str, Any]) -> Topology:
    if isinstance(topology, Topology):
        return topology.validated()
    return Topology.from_dict(topology)


def _index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LabError(f"interface {ifname!r} not found")
    return found[0]


def _route_version(route: Route) -> int:
    if route.via:
        return ipaddress.ip_address(route.via).version
    if route.dst != "default":
        return ipaddress.ip_network(route.dst).version
    return 4


def _is_tcp_listening(port: int) -> bool:
    """Inside a namespace: is any socket LISTENing on tcp ``port`` (v4 or v6)?"""
    for table in ("/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"):
        try:
            with open(table) as handle:
                rows = handle.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def remove_namespace_and_processes(name: str, settle_seconds: float = 5.0) -> None:
    """Kill every process inside the namespace, wait until each has really exited, then
    delete the namespace (even if some survive).

    A killed process leaves the namespace early in its exit, before it is gone, so the
    wait follows the killed pids themselves, not only the namespace's member list.
    """
    deadline = time.monotonic() + settle_seconds
    killed: dict[int, int | None] = {}
    leftover: list[int] = []
    while time.monotonic() < deadline:
        leftover = netns_mod.pids(name)
        for pid in leftover:
            killed.setdefault(pid, proc.start_time(pid))
            proc.kill(pid)
        dying = [pid for pid, start in killed.items() if proc.is_same_process(pid, start)]
        if not leftover and not dying:
            break
        time.sleep(0.02)
    netns_mod.remove(name)
    if leftover:
        raise LabError(f"namespace {name}: pids {leftover} survived SIGKILL")
