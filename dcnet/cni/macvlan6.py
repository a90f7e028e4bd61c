"""The macvlan agent's IPv6 (SLAAC or DHCPv6) steps of ADD, CHECK, DEL and the result.

``Ipv6Pod`` is mixed into ``dcnet.cni.dhcpagent.MacvlanAgent``. With ``ipv6: slaac``
(``dcnet.cni.slaac``) ADD writes the pod's IPv6 sysctls before its link comes up
(``prepare_pod6``), then, once the DHCPv4 lease is bound, waits (``ipv6.timeout``) for
the address the router advertisement gave and the router it announced (``wait_pod6``),
journals both as ``configured6`` and adds the host shim's /128 route. ``result6`` lists
the address with the router's link-local address as gateway and a ``::/0`` route via it
(``dns6``: a DHCPv6 lease's DNS servers and search domains);
``check6`` verifies address (past DAD) and default route in the pod; housekeeping
follows an address or router that changed later (``follow_pods6``). There is nothing to
release for SLAAC: deleting the pod's link removes the address, DEL removes the shim
route. With ``ipv6: dhcpv6`` ADD starts the attachment's ``Dhcp6Runner`` instead
(``_start_dhcp6``: address from the DHCPv6 server, router from the RA), DEL stops it
with a RELEASE (``_forget6``; ``release6_offline`` from the node over a temporary
link with the pod's MAC when the pod's link is gone or down), and ``resume6`` runs it
again from the journal after an agent restart.
"""

from __future__ import annotations

import contextlib
import time

from dcnet.cni import dhcpv6, leases, slaac
from dcnet.cni.args import parse_args
from dcnet.cni.config import NetConf
from dcnet.cni.dhcp6client import Dhcp6Runner
from dcnet.cni.errors import CHECK_FAILED, INVALID_CONFIG, TRY_AGAIN_LATER, CniError
from dcnet.cni.nsref import resolve
from dcnet.cni.podns import IFF_RUNNING, IFF_UP, pod_netlink, temp_name, write
from dcnet.cni.skel import CmdArgs
from dcnet.sysio import netns
from dcnet.undo import Undo

RELEASE6_PREFIX = "dcn6"  # temporary links sending a DHCPv6 RELEASE for a gone pod link


class Ipv6Pod:
    """IPv6 steps of ``MacvlanAgent`` (no-ops when the network's ``ipv6`` is off)."""

    def prepare_pod6(self, conf: NetConf, args: CmdArgs, cni_args: dict) -> None:
        """Write the pod's IPv6 sysctls (before its link comes up): SLAAC or DHCPv6."""
        settings = slaac.ipv6_settings(conf.raw)
        if not settings.enabled:
            return
        identity = "/".join([conf.name, cni_args.get("K8S_POD_NAMESPACE") or "",
                             cni_args.get("K8S_POD_NAME") or args.container_id, args.ifname])
        for path, value in slaac.pod_sysctls(args.ifname, settings, identity):
            try:
                netns.call_here_in(resolve(args.netns), write, path, value)
            except FileNotFoundError:
                raise CniError(INVALID_CONFIG, "invalid network config: ipv6: IPv6 is not "
                               f"supported here: the pod's namespace has no {path} (IPv6 "
                               "disabled in this kernel?); set ipv6 to \"off\"") from None

    def wait_pod6(self, conf: NetConf, args: CmdArgs, record: dict, index: int,
                  undo: Undo) -> None:
        """Wait for the IPv6 address (SLAAC, or the DHCPv6 client started here) and the
        router; journal them; add the shim route."""
        settings = slaac.ipv6_settings(conf.raw)
        if not settings.enabled:
            return
        if settings.mode == "dhcpv6":
            state = self._start_dhcp6(conf, args, record, index, undo, settings.timeout)
        else:
            with pod_netlink(args.netns) as pod:
                state = slaac.wait_slaac(pod, index, args.ifname, settings.timeout)
        record["configured6"] = state
        self.journal.write(record)
        self.shim_route6(None, state["address"])
        undo.push("remove the shim's IPv6 route",
                  lambda: self.shim_route6(state["address"], None))
        self.log(f"{record['containerID']}+{args.ifname}: {settings.mode} "
                 f"{state['address']} via {state['gateway']}")

    def _start_dhcp6(self, conf: NetConf, args: CmdArgs, record: dict, index: int,
                     undo: Undo, timeout: float) -> dict:
        """Start the attachment's DHCPv6 client; wait for its address, then the RA's
        router, within ``timeout`` in all."""
        cni_args = parse_args(args.args)
        identity = "/".join([cni_args.get("K8S_POD_NAMESPACE") or "",
                             cni_args.get("K8S_POD_NAME") or args.container_id, args.ifname])
        record["duid6"] = dhcpv6.duid(conf.client_id, record["mac"], identity).hex()
        runner = Dhcp6Runner(self, record, bytes.fromhex(record["duid6"]))
        key = runner.key
        self.runners6[key] = runner
        undo.push("stop the DHCPv6 client", lambda: self._forget6(key, release=True))
        runner.start()
        deadline = time.monotonic() + timeout
        while not runner.bound.wait(0.05):
            if runner.finished.is_set() or time.monotonic() > deadline:
                why = (f"the DHCPv6 client failed: {runner.error}" if runner.finished.is_set()
                       else f"no DHCPv6 lease within ipv6.timeout ({timeout:g}s)")
                raise CniError(TRY_AGAIN_LATER, f"{why} ({args.ifname})",
                               "is a DHCPv6 server answering on that segment?")
        with pod_netlink(args.netns) as pod:
            gateway = slaac.wait_router(pod, index, args.ifname,
                                        max(0.0, deadline - time.monotonic()))
        return {"address": record["configured6"]["address"], "gateway": gateway}

    def _forget6(self, key: str, release: bool) -> bool | None:
        """Stop an attachment's DHCPv6 client (releasing first); whether it released."""
        runner = self.runners6.pop(key, None)
        if runner is None:
            return None
        runner.stop(release)
        return runner.released

    @staticmethod
    def releasable6(record: dict) -> bool:
        """Whether the record holds a DHCPv6 lease still valid (worth a RELEASE)."""
        lease = record.get("lease6")
        if not lease or not record.get("duid6"):
            return False
        valid = lease.get("valid")
        return valid == dhcpv6.INFINITY or float(lease["obtained"]) + valid > time.time()

    def release6_offline(self, record: dict) -> bool:
        """RELEASE a journaled DHCPv6 lease with no client able to (the pod's link gone or
        down): over a temporary macvlan carrying the pod's MAC on the master, from the
        node's namespace (IPv6 on, no DAD, so its link-local address is there at once)."""
        address = record["lease6"]["address"]
        if self._pod_link_usable(record):  # no client, but the pod's link is there
            runner = Dhcp6Runner(self, record, bytes.fromhex(record["duid6"]),
                                 resume=record["lease6"])
            try:
                return netns.call_here_in(resolve(record["netns"]), runner.release_here)
            except (OSError, RuntimeError) as exc:
                self.log(f"DHCPv6 release over the pod's link failed: {exc}")
        name = temp_name(RELEASE6_PREFIX, record["containerID"], record["ifname"])
        try:
            with self.node() as nl:
                master = nl.link(record["master"])
                if master is None or master["flags"] & (IFF_UP | IFF_RUNNING) != (
                        IFF_UP | IFF_RUNNING):
                    self.log(f"cannot release {address} (DHCPv6): master "
                             f"{record['master']} is missing or down")
                    return False
                nl.delete_link(name)
                mode = "passthru" if record["mode"] == "passthru" else "bridge"
                nl.add_macvlan(name, master["index"], mode, mac=record["mac"])
                temp = nl.link(name)
                assert temp is not None
            for key, value in (("disable_ipv6", "0"), ("accept_dad", "0"),
                               ("accept_ra", "0"), ("autoconf", "0")):
                write(f"/proc/sys/net/ipv6/conf/{name}/{key}", value)
            with self.node() as nl:
                nl.set_up(temp["index"])
            runner = Dhcp6Runner(self, record, bytes.fromhex(record["duid6"]),
                                 resume=record["lease6"], device=name)
            return runner.release_here()
        except Exception as exc:
            self.log(f"cannot release {address} (DHCPv6): {type(exc).__name__}: {exc}")
            return False
        finally:
            with self.node() as nl, contextlib.suppress(OSError):
                nl.delete_link(name)

    def resume6(self, record: dict) -> None:
        """After a restart: run the journaled DHCPv6 lease's client again (no-op without)."""
        key = leases.attachment_key(record["containerID"], record["ifname"])
        if not record.get("lease6") or not record.get("duid6") or key in self.runners6:
            return
        runner = Dhcp6Runner(self, record, bytes.fromhex(record["duid6"]),
                             resume=record["lease6"])
        self.runners6[key] = runner
        runner.start()

    def follow_pods6(self) -> None:
        """Housekeeping: when a pod's SLAAC address or router changed (renumbering, the
        address deprecated), journal the new ones and move the shim's route, as a DHCPv4
        lease that moved; CHECK then answers 103 for the old prevResult. An address gone
        with none in its place is left journaled (CHECK fails, DEL cleans up)."""
        if not self.ipv6.enabled:
            return
        for key, runner in list(self.runners.items()):
            record = runner.record
            old = record.get("configured6")
            if not old or record["state"] != leases.BOUND or key in self.runners6:
                continue  # a DHCPv6 client follows its own address
            try:
                with pod_netlink(record["netns"]) as pod:
                    link = pod.link(record["ifname"])
                    state = None if link is None else slaac.slaac_state(pod, link["index"])
                    usable = [] if link is None else slaac.usable_global(
                        slaac.addresses6(pod, link["index"]))
            except (OSError, RuntimeError):
                continue
            kept = old["address"] in {f"{slaac.fmt6(a['address'])}/{a['plen']}"
                                      for a in usable}
            if state is None or (kept and state["gateway"] == old["gateway"]):
                continue
            if kept:
                state["address"] = old["address"]  # only the router changed
            with self._lock(key):
                if self.runners.get(key) is not runner:
                    continue
                record["configured6"] = state
                self.journal.write(record)
                self.shim_route6(old["address"], state["address"])
            self.log(f"{key}: IPv6 changed from {old['address']} via {old['gateway']} to "
                     f"{state['address']} via {state['gateway']}")

    @staticmethod
    def result6(result: dict, record: dict, index: int) -> None:
        """Append the SLAAC address (gateway: the router's link-local) and ::/0."""
        configured6 = record.get("configured6")
        if not configured6:
            return
        result["ips"].append({"address": configured6["address"], "interface": index,
                              "gateway": configured6["gateway"]})
        result["routes"].append({"dst": "::/0", "gw": configured6["gateway"]})

    @staticmethod
    def dns6(result: dict, record: dict) -> None:
        """Add the DHCPv6 lease's DNS servers and search domains to the result's dns."""
        lease = record.get("lease6") or {}
        if not lease.get("dns") and not lease.get("domains"):
            return
        dns = dict(result.get("dns") or {})
        for key, extra in (("nameservers", lease.get("dns") or []),
                           ("search", lease.get("domains") or [])):
            merged = list(dns.get(key) or [])
            merged += [item for item in extra if item not in merged]
            if merged:
                dns[key] = merged
        result["dns"] = dns

    def check6(self, args: CmdArgs, record: dict, ips: list[dict], pod, link: dict) -> None:
        """CHECK's IPv6 part: prevResult, journal and the pod agree (CniError 103)."""
        configured6 = record.get("configured6")
        if record.get("lease6") or record.get("duid6"):
            runner = self.runners6.get(leases.attachment_key(args.container_id, args.ifname))
            if runner is None or not runner.alive():
                raise CniError(CHECK_FAILED, "CHECK failed: no DHCPv6 client is keeping the "
                               "IPv6 lease")
        listed = [ip["address"] for ip in ips if ":" in ip.get("address", "")]
        if not configured6:
            if listed:
                raise CniError(CHECK_FAILED, f"CHECK failed: prevResult has {listed[0]} but "
                               "no IPv6 address is journaled")
            return
        if not configured6.get("address"):
            raise CniError(CHECK_FAILED, "CHECK failed: the DHCPv6 lease ended (soliciting "
                           "a new one)")
        if configured6["address"] not in listed:
            raise CniError(CHECK_FAILED, f"CHECK failed: the IPv6 address is now "
                           f"{configured6['address']}, prevResult has "
                           f"{', '.join(listed) or 'none'}")
        address, plen = slaac.parse_cidr6(configured6["address"])
        if not any(a["address"] == address and a["plen"] == plen
                   for a in slaac.usable_global(slaac.addresses6(pod, link["index"]))):
            raise CniError(CHECK_FAILED, f"CHECK failed: {args.ifname} lacks "
                           f"{configured6['address']} (or it is tentative or deprecated)")
        gateway = slaac.parse_cidr6(configured6["gateway"])[0]
        if not any(r["plen"] == 0 and r["oif"] == link["index"] and r["gateway"] == gateway
                   for r in slaac.routes6(pod)):
            raise CniError(CHECK_FAILED, f"CHECK failed: no IPv6 default route via "
                           f"{configured6['gateway']} on {args.ifname}")
