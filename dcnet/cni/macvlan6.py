"""The macvlan agent's IPv6 (SLAAC) steps of ADD, CHECK and the CNI result.

``Ipv6Pod`` is mixed into ``dcnet.cni.dhcpagent.MacvlanAgent``. With ``ipv6: slaac``
(``dcnet.cni.slaac``) ADD writes the pod's IPv6 sysctls before its link comes up
(``prepare_pod6``), then, once the DHCPv4 lease is bound, waits (``ipv6.timeout``) for
the address the router advertisement gave and the router it announced (``wait_pod6``),
journals both as ``configured6`` and adds the host shim's /128 route. ``result6`` lists
the address with the router's link-local address as gateway and a ``::/0`` route via it;
``check6`` verifies address (past DAD) and default route in the pod; housekeeping
follows an address or router that changed later (``follow_pods6``). There is nothing to
release for SLAAC: deleting the pod's link removes the address, DEL removes the shim
route.
"""

from __future__ import annotations

from dcnet.cni import leases, slaac
from dcnet.cni.config import NetConf
from dcnet.cni.errors import CHECK_FAILED, INVALID_CONFIG, CniError
from dcnet.cni.nsref import resolve
from dcnet.cni.podns import pod_netlink, write
from dcnet.cni.skel import CmdArgs
from dcnet.sysio import netns
from dcnet.undo import Undo


class Ipv6Pod:
    """IPv6 steps of ``MacvlanAgent`` (no-ops when the network's ``ipv6`` is off)."""

    def prepare_pod6(self, conf: NetConf, args: CmdArgs, cni_args: dict) -> None:
        """Write the pod's IPv6 sysctls for SLAAC (before its link comes up)."""
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
        """Wait for the SLAAC address and router; journal them; add the shim route."""
        settings = slaac.ipv6_settings(conf.raw)
        if not settings.enabled:
            return
        with pod_netlink(args.netns) as pod:
            state = slaac.wait_slaac(pod, index, args.ifname, settings.timeout)
        record["configured6"] = state
        self.journal.write(record)
        self.shim_route6(None, state["address"])
        undo.push("remove the shim's IPv6 route",
                  lambda: self.shim_route6(state["address"], None))
        self.log(f"{record['containerID']}+{args.ifname}: SLAAC {state['address']} via "
                 f"{state['gateway']}")

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
            if not old or record["state"] != leases.BOUND:
                continue
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
    def check6(args: CmdArgs, record: dict, ips: list[dict], pod, link: dict) -> None:
        """CHECK's IPv6 part: prevResult, journal and the pod agree (CniError 103)."""
        configured6 = record.get("configured6")
        listed = [ip["address"] for ip in ips if ":" in ip.get("address", "")]
        if not configured6:
            if listed:
                raise CniError(CHECK_FAILED, f"CHECK failed: prevResult has {listed[0]} but "
                               "no IPv6 address is journaled")
            return
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
