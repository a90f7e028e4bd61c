"""The macvlan plugin: a thin client of the node agent, plus DEL's agent-down fallback.

ADD, CHECK, STATUS and GC are forwarded to ``dcnet-agent`` over its unix socket
(``dcnet.cni.agentproto``): the agent creates the macvlan link in the pod, runs DHCP in
the pod's namespace, configures the pod from the lease (and, with ``ipv6: slaac``, from
the router advertisement) and keeps renewing it. The plugin process only imports
``_socket``, ``cjson``, the skeleton and ``dcnet.cni.slaac``'s config check (no
pyroute2).

Without an agent: ADD fails with 11 (try again later) having created nothing, STATUS
answers 50, CHECK and GC answer 11. DEL never fails for that reason: it queues the
release in ``<stateDir>/<network>/release/`` (the agent sends it, from the leased
address, when it is back) and deletes the pod's link itself (only a macvlan whose alias
marks it as this attachment's), so the pod's teardown is never blocked.
"""

from __future__ import annotations

import os
import sys

from dcnet.cni import agentproto
from dcnet.cni.args import parse_args
from dcnet.cni.config import NetConf, load_conf
from dcnet.cni.errors import NOT_AVAILABLE, TRY_AGAIN_LATER, UNKNOWN_CONTAINER, CniError
from dcnet.cni.nsref import pinned_fd, resolve
from dcnet.cni.slaac import ipv6_settings

# Added to the DHCP timeout for the agent's own work (link creation, configuration).
ADD_MARGIN = 15.0
SHORT_TIMEOUT = 10.0


def link_alias(network: str, container_id: str, ifname: str) -> str:
    """The IFLA_IFALIAS marking a pod link as one attachment's (checked before deleting)."""
    return f"dcnet {network} {container_id} {ifname}"


def _log(text: str) -> None:
    sys.stderr.write(f"dcnet: {text}\n")


class Macvlan:
    """The plugin object handed to ``skel.dispatch`` for ``mode: macvlan``."""

    def _call(self, conf: NetConf, args, timeout: float) -> dict:
        env = {"CNI_CONTAINERID": args.container_id, "CNI_NETNS": args.netns,
               "CNI_IFNAME": args.ifname, "CNI_ARGS": args.args, "CNI_PATH": args.path}
        answer = agentproto.call(conf.socket_path,
                                 agentproto.request(args.command, env, args.conf), timeout,
                                 pinned_fd(args.netns))
        error = answer.get("error")
        if error:
            raise CniError(int(error.get("code") or 999), str(error.get("msg", "")),
                           str(error.get("details", "")))
        return answer.get("result") or {}

    def add(self, args) -> dict:
        conf = load_conf(args.conf)
        ipv6 = ipv6_settings(conf.raw)
        parse_args(args.args)
        if not os.path.exists(resolve(args.netns)):
            raise CniError(UNKNOWN_CONTAINER, f"network namespace {args.netns} does not exist")
        wait = conf.dhcp_timeout + (ipv6.timeout if ipv6.enabled else 0)
        try:
            return self._call(conf, args, wait + ADD_MARGIN)
        except agentproto.Unreachable as exc:
            raise CniError(TRY_AGAIN_LATER, "dcnet-agent is unreachable", str(exc)) from None

    def delete(self, args) -> None:
        conf = load_conf(args.conf)
        parse_args(args.args)
        try:
            self._call(conf, args, conf.dhcp_timeout + ADD_MARGIN)
            return
        except agentproto.Unreachable as exc:
            _log(f"DEL without the agent ({exc}): release queued, link deleted here")
        from dcnet.cni.leases import ReleaseQueue

        ReleaseQueue(conf.lease_dir).put(args.container_id, args.ifname, args.netns)
        if args.netns and os.path.exists(resolve(args.netns)):
            delete_pod_link(resolve(args.netns), args.ifname,
                            link_alias(conf.name, args.container_id, args.ifname))

    def check(self, args) -> None:
        conf = load_conf(args.conf)
        parse_args(args.args)
        try:
            self._call(conf, args, SHORT_TIMEOUT)
        except agentproto.Unreachable as exc:
            raise CniError(TRY_AGAIN_LATER, "dcnet-agent is unreachable", str(exc)) from None

    def status(self, args) -> None:
        conf = load_conf(args.conf)
        try:
            self._call(conf, args, SHORT_TIMEOUT)
        except agentproto.Unreachable as exc:
            raise CniError(NOT_AVAILABLE, "dcnet cannot serve ADD: dcnet-agent is "
                           "unreachable", str(exc)) from None

    def gc(self, args) -> dict:
        conf = load_conf(args.conf)
        try:
            return self._call(conf, args, conf.dhcp_timeout + ADD_MARGIN)
        except agentproto.Unreachable as exc:
            raise CniError(TRY_AGAIN_LATER, "dcnet-agent is unreachable", str(exc)) from None


def delete_pod_link(netns_path: str, ifname: str, alias: str) -> bool:
    """Delete ``ifname`` in the pod if it is the macvlan this attachment made."""
    from _socket import SOCK_CLOEXEC, SOCK_RAW

    from dcnet.cni.rtnl import AF_NETLINK, NETLINK_ROUTE, Netlink
    from dcnet.sysio.netns import socket_in

    try:
        sock = socket_in(netns_path, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE)
    except (OSError, RuntimeError):
        return False
    with Netlink(sock) as nl:
        link = nl.link(ifname)
        if link is None or link["kind"] != "macvlan" or link["alias"] != alias:
            return False
        return nl.delete_link(ifname)
