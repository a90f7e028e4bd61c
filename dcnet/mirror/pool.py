"""Source pools for replay: one network namespace and one source address per copy.

It owns :class:`SourcePool`, a context manager that creates ``count`` namespaces named
``dmr<5 hex>-<i>`` (the pool's prefix and the copy's index), each with a veth ``eth0``
holding the next free address of the pool's network (IPv4 or IPv6, with the network's
prefix length, IPv6 without duplicate address detection; an optional default route via
``gateway``); the veth's other end, named like the
namespace, is made a port of an existing bridge ``bridge`` in namespace ``via_netns``
(the caller's namespace when None). Every step is pushed on an undo stack as it is done;
leaving the ``with`` block (normally, on an exception, on Ctrl-C, or on SIGTERM, which
the pool turns into ``SystemExit`` while it is active in the main thread) kills what
runs in the namespaces, deletes the bridge ports and the namespaces (their addresses
and veth ends go with them), with SIGINT/SIGTERM held until it is done. A pool whose
build fails halfway undoes what it built before raising. Before it creates anything the
pool writes a state file ``/run/dcnet-mirror/<prefix>.json`` (owner pid and start time,
namespaces, bridge); a pool whose owner was SIGKILLed (so never undid anything) is
removed by :func:`sweep` (``elbctl mirror sweep``), which never touches a pool whose
owner is alive.

Namespaces are switched only through :mod:`dcnet.sysio.netns`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from dcnet.sysio import files, proc
from dcnet.sysio import netns as netns_mod

PREFIX = "dmr"
STATE_DIR = "/run/dcnet-mirror"
CARRIER_WAIT = 20.0     # seconds: a bridge drops a new port's frames until its carrier
SETTLE = 5.0            # seconds given to killed processes to leave a namespace
IFA_F_NODAD = 0x02


class PoolError(RuntimeError):
    """A pool could not be built, or its teardown left something behind."""


def addresses(network: str, count: int, reserved: Iterable[str] = ()) -> list[str]:
    """The first ``count`` host addresses of ``network`` not in ``reserved``, as
    ``ADDR/PREFIXLEN`` (pure)."""
    net = ipaddress.ip_network(network, strict=False)
    taken = {ipaddress.ip_address(a) for a in reserved}
    found = []
    for host in net.hosts():
        if host in taken:
            continue
        found.append(f"{host}/{net.prefixlen}")
        if len(found) == count:
            return found
    raise PoolError(f"{network} has fewer than {count} free host addresses")


def names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(count)]


class SourcePool:
    """``count`` replay namespaces on a bridge; ``namespaces`` and ``sources`` (the copy
    addresses, without prefix length) are valid inside the ``with`` block."""

    def __init__(self, network: str, count: int, bridge: str, via_netns: str | None = None,
                 gateway: str | None = None, reserved: Iterable[str] = ()):
        if count < 1:
            raise PoolError("a pool needs at least one copy")
        self.bridge, self.via_netns, self.gateway = bridge, via_netns, gateway
        reserved = [*reserved, *([gateway] if gateway else [])]
        self.interfaces = addresses(network, count, reserved)
        self.sources = [a.partition("/")[0] for a in self.interfaces]
        self.prefix = PREFIX + os.urandom(3).hex()[:5]
        self.namespaces = names(self.prefix, count)
        self._undo: list[tuple[str, Callable[[], Any]]] = []
        self._saved_sigterm: Any = None

    # building

    def __enter__(self) -> SourcePool:
        self._catch_sigterm()
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def build(self) -> None:
        self._write_state()
        _in_via(self.via_netns, self._build_here)

    def _write_state(self) -> None:
        os.makedirs(STATE_DIR, exist_ok=True)
        path = os.path.join(STATE_DIR, f"{self.prefix}.json")
        files.atomic_write(path, json.dumps({
            "prefix": self.prefix, "owner": os.getpid(),
            "start_time": proc.start_time(os.getpid()), "namespaces": self.namespaces,
            "bridge": self.bridge, "via_netns": self.via_netns}) + "\n")
        self._undo.append((f"remove {path}", lambda: _unlink(path)))

    def _build_here(self) -> None:
        """In the bridge's namespace (one netlink socket there, no forked helper)."""
        from pyroute2 import IPRoute

        with IPRoute() as via:
            bridge = via.link_lookup(ifname=self.bridge)
            if not bridge:
                raise PoolError(f"no bridge {self.bridge!r} in namespace "
                                f"{self.via_netns or '(this one)'}")
            for name, interface in zip(self.namespaces, self.interfaces, strict=True):
                self._add_copy(via, bridge[0], name, interface)
            self._wait_carrier(via)

    def _add_copy(self, via: Any, bridge: int, name: str, interface: str) -> None:
        netns_mod.create(name)
        self._undo.append((f"remove namespace {name}", lambda: _remove_namespace(name)))
        via.link("add", ifname=name, kind="veth",
                 peer={"ifname": "eth0", "net_ns_fd": name})
        self._undo.append((f"delete veth {name}", lambda: _delete_link(self.via_netns, name)))
        index = via.link_lookup(ifname=name)[0]
        via.link("set", index=index, master=bridge, state="up")
        netns_mod.run_in(name, _configure_copy, interface, self.gateway)

    def _wait_carrier(self, via: Any) -> None:
        """Every bridge port operationally up (until then the bridge drops its frames)."""
        pending = set(self.namespaces)
        deadline = time.monotonic() + CARRIER_WAIT
        while pending:
            for name in sorted(pending):
                links = via.get_links(via.link_lookup(ifname=name)[0])
                if links and links[0].get_attr("IFLA_OPERSTATE") == "UP":
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise PoolError(f"bridge ports without carrier after {CARRIER_WAIT:g}s: "
                                + ", ".join(sorted(pending)))
            if pending:
                time.sleep(0.02)

    # teardown

    def close(self) -> None:
        """Undo everything built, last first; PoolError names what could not be undone."""
        errors = []
        self._restore_sigterm()
        with proc.signals_deferred():
            while self._undo:
                description, action = self._undo.pop()
                try:
                    action()
                except Exception as exc:    # keep undoing the rest
                    errors.append(f"{description}: {exc}")
        if errors:
            raise PoolError("; ".join(errors))

    def _catch_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_sigterm(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)

        self._saved_sigterm = signal.signal(signal.SIGTERM, on_sigterm)

    def _restore_sigterm(self) -> None:
        if self._saved_sigterm is not None:
            signal.signal(signal.SIGTERM, self._saved_sigterm)
            self._saved_sigterm = None


def _configure_copy(interface: str, gateway: str | None) -> None:
    """Inside a copy's namespace: lo and eth0 up, the copy's address, the gateway."""
    from pyroute2 import IPRoute

    address, _, prefixlen = interface.partition("/")
    six = ":" in address
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        eth0 = ipr.link_lookup(ifname="eth0")[0]
        # IPv6: no duplicate address detection (the pool's addresses are its own, and a
        # tentative address cannot be a connection's source)
        ipr.addr("add", index=eth0, address=address, prefixlen=int(prefixlen),
                 **({"family": socket.AF_INET6, "flags": IFA_F_NODAD} if six else {}))
        ipr.link("set", index=eth0, state="up")
        if gateway:
            ipr.route("add", dst="default", gateway=gateway,
                      family=socket.AF_INET6 if six else socket.AF_INET)


def _in_via(via_netns: str | None, func: Callable[..., Any], *args: Any) -> Any:
    """Run func here (None) or in the named namespace (a thread switched there)."""
    if via_netns is None:
        return func(*args)
    return netns_mod.run_in(via_netns, func, *args)


def _delete_link(via_netns: str | None, name: str) -> None:
    """Delete the bridge port ``name`` if it is still there (removing the namespace of
    its peer deletes it too)."""
    if via_netns is not None and not netns_mod.exists(via_netns):
        return
    _in_via(via_netns, _delete_here, name)


def _delete_here(name: str) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=name)
        if index:
            ipr.link("del", index=index[0])


def _remove_namespace(name: str) -> None:
    """Kill every process in the namespace, wait until each is gone, delete it (a process
    left inside would keep the namespace, its veth and its address alive)."""
    deadline = time.monotonic() + SETTLE
    killed: dict[int, int | None] = {}
    while True:
        inside = netns_mod.pids(name)
        for pid in inside:
            killed.setdefault(pid, proc.start_time(pid))
            proc.kill(pid)
        alive = [p for p, start in killed.items() if proc.is_same_process(p, start)]
        if not inside and not alive:
            break
        if time.monotonic() > deadline:
            netns_mod.remove(name)
            raise PoolError(f"namespace {name}: pids {sorted(set(inside) | set(alive))} "
                            "survived SIGKILL")
        time.sleep(0.02)
    netns_mod.remove(name)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def sweep() -> list[str]:
    """Remove the pools whose owner process is gone (it was SIGKILLed, so never undid
    anything): their processes, bridge ports, namespaces and state files. Returns the
    namespaces removed; a pool whose owner is alive is left alone."""
    removed = []
    try:
        states = sorted(n for n in os.listdir(STATE_DIR) if n.endswith(".json"))
    except FileNotFoundError:
        return removed
    for entry in states:
        path = os.path.join(STATE_DIR, entry)
        try:
            with open(path) as handle:
                state = json.load(handle)
        except (FileNotFoundError, ValueError):
            continue
        if proc.is_same_process(state["owner"], state["start_time"]):
            continue
        for name in state["namespaces"]:
            if netns_mod.exists(name):
                _remove_namespace(name)     # its veth and so the bridge port go with it
                removed.append(name)
            with contextlib.suppress(Exception):
                _delete_link(state["via_netns"], name)
        _unlink(path)
    return removed


def leftovers() -> list[str]:
    """Namespaces that look like a pool's (``dmr`` + 5 hex + ``-N``): none should exist
    once every pool is closed."""
    import re

    pattern = re.compile(rf"^{PREFIX}[0-9a-f]{{5}}-[0-9]+$")
    return [n for n in netns_mod.list_names() if pattern.match(n)]
