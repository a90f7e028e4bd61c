"""The macvlan node agent: pod links, DHCP leases that survive restarts, the host shim.

``MacvlanAgent`` serves the plugin's requests (``dcnet.cni.agentproto``) on a root-only
unix socket (``dcnet.cni.agentsocket``). It is assembled from units that each own one
part:

- ``dcnet.cni.dhcphandlers``: ADD, DEL, CHECK, STATUS, GC (the pod link, the lease's
  release);
- ``dcnet.cni.dhcprunner``: the per-pod DHCP client thread and its hooks (address, route,
  journal);
- ``dcnet.cni.dhcpclient``: pyroute2's DHCP client glued to the lease journal;
- ``dcnet.cni.hostshim``: the host shim macvlan and its per-pod routes (IPv4 and IPv6);
- ``dcnet.cni.macvlan6``: the pods' IPv6 (SLAAC) in ADD, CHECK and the result;
- ``dcnet.cni.dhcprecovery``: resuming, expiring and releasing journaled leases at start
  and in housekeeping.

This module owns the agent's state (journal, release queue, runners, per-attachment
locks, the node's netlink socket) and its life: start, housekeeping loop, close.
Stopping the agent keeps every lease: pods keep their addresses while it restarts.
Namespace switching goes through ``dcnet.sysio.netns``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable

from dcnet.cni import agentsocket, leases
from dcnet.cni.agentlock import network_lock
from dcnet.cni.agentsocket import AgentServer
from dcnet.cni.config import NetConf, load_conf
from dcnet.cni.dhcp6client import Dhcp6Runner
from dcnet.cni.dhcphandlers import RequestHandlers
from dcnet.cni.dhcprecovery import Recovery
from dcnet.cni.dhcprunner import Runner
from dcnet.cni.errors import INVALID_CONFIG, TRY_AGAIN_LATER, CniError
from dcnet.cni.hostshim import HostShim
from dcnet.cni.macvlan6 import Ipv6Pod
from dcnet.cni.podns import temp_name
from dcnet.cni.rtnl import Netlink
from dcnet.cni.skel import CmdArgs
from dcnet.cni.slaac import ipv6_settings

__all__ = ["MacvlanAgent", "Runner", "temp_name"]


class MacvlanAgent(RequestHandlers, HostShim, Ipv6Pod, Recovery):
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
        self.runners6: dict[str, Dhcp6Runner] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._node_lock = threading.Lock()
        self._node_nl = Netlink()  # bound to the agent's (node) namespace for its life
        self.shim_index: int | None = None
        self.ipv6 = ipv6_settings(conf.raw)
        self._shim6_warned = False
        self.stopping = threading.Event()
        self.server: AgentServer | None = None
        self.lock = network_lock(conf.run_dir, conf.name)  # one serving agent per node

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
        ipv6_settings(conf.raw)  # validates the ipv6 fields (code 7 naming the field)
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

    def _forget(self, key: str, release: bool) -> None:
        runner = self.runners.pop(key, None)
        if runner is not None:
            runner.stop(release)

    def listen(self) -> None:
        self.server = agentsocket.listen(self.conf.socket_path, self.serve, self.log)

    def start(self) -> bool:
        """Own the network on this node (standing by while another agent does), then set
        up the shim, send queued releases, resume the journal and serve; False when
        stopped before owning it."""
        if not self.lock.acquire(self.stopping, self.log,
                                 f"network {self.conf.name} on this node"):
            return False
        self.setup_shim()
        self.process_release_queue()
        self.resume()
        self.listen()
        return True

    def request_stop(self) -> None:
        self.stopping.set()

    def run(self, sweep: float = 5.0) -> None:
        """Start, then do housekeeping every ``sweep`` seconds until ``request_stop``."""
        try:
            if not self.start():
                return
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
        for key in list(self.runners6):
            self._forget6(key, release=False)
        self._node_nl.close()
        self.lock.release()

