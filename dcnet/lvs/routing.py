"""elbctl's routing objects on a director, through pyroute2: read, write, look up.

Owned, and only these: the VIP interface (``lvs.vip_interface``) and every global
address on it; policy rules whose priority is in ``lvs.rule_priority_min..max``; routes
(any table) whose protocol is ``lvs.route_protocol``; the sysctls of
:data:`dcnet.lvs.state.SYSCTLS`. Anything else is only reported: routes of other
protocols in the carrier tables, rules outside the range that point at a carrier table
or come from a VIP. IPv4 and IPv6 alike: a dual-stack line has a default route per
family in its table and a rule per VIP (``ip -6 rule``). ``writes`` counts rtnetlink
write requests, ``sysctl_writes`` sysctl writes.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dcnet.lvs.state import StateDict, host_bits, norm
from dcnet.plan import Action, Change

FR_ACT_TO_TBL = 1
IFA_F_NODAD = 0x02


@dataclass
class RoutingRead:
    state: StateDict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    rule_specs: dict = field(default_factory=dict)   # key -> pyroute2 kwargs to delete it


class Routing:
    """Rules, routes, addresses, link and sysctls of one namespace (None = the caller's)."""

    def __init__(self, settings=None, netns: str | None = None):
        self.settings = settings           # the model's LVSSettings (set before reading)
        self.netns = netns
        self.writes = 0
        self.sysctl_writes = 0
        self._ipr = None

    @property
    def ipr(self):
        if self._ipr is None:
            from pyroute2 import IPRoute

            if self.netns:
                # the socket is made in the namespace by dcnet.sysio.netns (no helper
                # process, unlike IPRoute(netns=...)) and handed to pyroute2
                from dcnet.sysio import netns as netns_mod

                sock = netns_mod.socket_in(netns_mod.path_of(self.netns), socket.AF_NETLINK,
                                           socket.SOCK_DGRAM, 0)
                self._ipr = IPRoute(fileno=sock.detach())
            else:
                self._ipr = IPRoute()
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def __del__(self) -> None:
        # dropped without close(): release pyroute2's socket and event loop here rather
        # than leave them to their finalizers (ResourceWarnings)
        if getattr(self, "_ipr", None) is not None:
            self.close()

    # ------------------------------------------------------------------ read

    def read(self, carrier_tables: Iterable[int] = (), vips: Iterable[str] = (),
             sysctls: Iterable[str] = ()) -> RoutingRead:
        out = RoutingRead()
        self._read_link_and_vips(out)
        self._read_rules(out, set(carrier_tables), {norm(v) for v in vips})
        self._read_routes(out, set(carrier_tables))
        for name in sysctls:
            value = self.sysctl_get(name)
            if value is not None:
                out.state[("sysctl", (name,))] = {"value": value}
        return out

    def _index(self, ifname: str) -> int | None:
        found = self.ipr.link_lookup(ifname=ifname)
        return found[0] if found else None

    def _read_link_and_vips(self, out: RoutingRead) -> None:
        name = self.settings.vip_interface
        index = self._index(name)
        if index is None:
            return
        link = self.ipr.get_links(index)[0]
        up = bool(link["flags"] & 1)
        out.state[("link", (name,))] = {"state": "up" if up else "down"}
        for msg in self.ipr.get_addr(index=index):
            if msg["scope"] != 0:          # link-local and host-scope are not VIPs
                continue
            address = norm(msg.get_attr("IFA_ADDRESS"))
            out.state[("vip", (address,))] = {"prefixlen": msg["prefixlen"]}

    def _read_rules(self, out: RoutingRead, tables: set[int], vips: set[str]) -> None:
        low, high = self.settings.rule_priority_min, self.settings.rule_priority_max
        seen: set = set()
        for msg in self.ipr.get_rules():
            family = msg["family"]
            priority = msg.get_attr("FRA_PRIORITY") or 0
            table = msg.get_attr("FRA_TABLE") or msg["table"]
            src = msg.get_attr("FRA_SRC")
            spec = {"family": family, "priority": priority, "table": table,
                    "action": msg["action"]}
            if src:
                spec.update(src=src, src_len=msg["src_len"])
            if not low <= priority <= high:
                if table in tables or (src and norm(src) in vips):
                    out.notes.append(f"left alone: rule priority {priority} from "
                                     f"{src or 'all'} lookup {table} (outside elbctl's range "
                                     f"{low}-{high})")
                continue
            simple = (src and msg["src_len"] == host_bits(src) and msg["action"] == FR_ACT_TO_TBL
                      and not msg["dst_len"] and not msg.get_attr("FRA_IIFNAME")
                      and not msg.get_attr("FRA_OIFNAME") and not msg.get_attr("FRA_FWMARK"))
            if simple:
                key = (norm(src),)
            else:
                selectors = [f"{name[4:].lower()} {msg.get_attr(name)}" for name in
                             ("FRA_SRC", "FRA_DST", "FRA_FWMARK", "FRA_IIFNAME", "FRA_OIFNAME")
                             if msg.get_attr(name) is not None]
                key = ("other", priority, " ".join(selectors) or "all")
            while key in seen:
                key = (*key[:3], f"#{len(seen)}")
            seen.add(key)
            out.state[("rule", key)] = {"table": table, "priority": priority}
            out.rule_specs[key] = spec

    def _read_routes(self, out: RoutingRead, tables: set[int]) -> None:
        proto = self.settings.route_protocol
        names = {}
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in self.ipr.route("dump", family=family):
                table = msg.get_attr("RTA_TABLE") or msg["table"]
                ours = msg["proto"] == proto
                if not ours and table not in tables:
                    continue
                dst = msg.get_attr("RTA_DST")
                dst = f"{dst}/{msg['dst_len']}" if dst else (
                    "0.0.0.0/0" if family == socket.AF_INET else "::/0")
                if not ours:
                    if msg["type"] == 1:     # unicast; skip local/broadcast bookkeeping
                        out.notes.append(f"left alone: route {dst} in carrier table {table} "
                                         f"(protocol {msg['proto']}, not elbctl's {proto})")
                    continue
                oif = msg.get_attr("RTA_OIF")
                if oif not in names:
                    links = self.ipr.get_links(oif) if oif else []
                    names[oif] = links[0].get_attr("IFLA_IFNAME") if links else None
                out.state[("route", (table, dst))] = {"gateway": msg.get_attr("RTA_GATEWAY"),
                                                      "dev": names[oif]}

    # ------------------------------------------------------------------ write

    def apply(self, change: Change, rule_specs: Mapping | None = None) -> None:
        """Carry out one change; ``rule_specs``: :attr:`RoutingRead.rule_specs` of the
        read the change was planned from (how to delete a rule that is not elbctl's
        simple ``from VIP lookup TABLE``)."""
        if change.kind == "rule":
            self._apply_rule(change, rule_specs or {})
            return
        getattr(self, f"_apply_{change.kind}")(change)

    def _apply_link(self, change: Change) -> None:
        name = change.key[0]
        if change.action is Action.DELETE:
            return                                   # never removed: operators may use it
        index = self._index(name)
        if index is None:
            try:
                self.ipr.link("add", ifname=name, kind="dummy")
            except Exception as exc:
                raise RuntimeError(f"cannot create VIP interface {name} (kind dummy): {exc};"
                                   " create it (any kind) and apply again") from exc
            self.writes += 1
            index = self._index(name)
        self.ipr.link("set", index=index, state="up")
        self.writes += 1

    def _apply_vip(self, change: Change) -> None:
        address = change.key[0]
        index = self._index(self.settings.vip_interface)
        if index is None:
            raise RuntimeError(f"VIP interface {self.settings.vip_interface} does not exist")
        if change.old is not None:
            self._ignore(errno.EADDRNOTAVAIL, self.ipr.addr, "del", index=index,
                         address=address, prefixlen=change.old["prefixlen"])
            self.writes += 1
        if change.new is not None:
            # an IPv6 VIP skips duplicate address detection: it would stay tentative (not
            # usable as a reply's source) for a second, or for good on a link without
            # carrier; the VIP is the director's by the model (keepalived does the same)
            extra = {"flags": IFA_F_NODAD} if ":" in address else {}
            self.ipr.addr("add", index=index, address=address,
                          prefixlen=change.new["prefixlen"], **extra)
            self.writes += 1

    @staticmethod
    def _rule_spec(key: tuple, attrs: Mapping, specs: Mapping) -> dict:
        if key in specs and key[0] == "other":
            return dict(specs[key])
        src = key[0]
        return {"family": socket.AF_INET6 if ":" in src else socket.AF_INET, "src": src,
                "src_len": host_bits(src), "table": attrs["table"],
                "priority": attrs["priority"], "action": FR_ACT_TO_TBL}

    def _apply_rule(self, change: Change, specs: Mapping) -> None:
        if change.old is not None:
            spec = self._rule_spec(change.key, change.old, specs)
            self._ignore(errno.ENOENT, self.ipr.rule, "del", **spec)
            self.writes += 1
        if change.new is not None:
            self.ipr.rule("add", **self._rule_spec(change.key, change.new, specs))
            self.writes += 1

    def _route_spec(self, key: tuple, attrs: dict) -> dict:
        table, dst = key
        family = socket.AF_INET6 if ":" in dst else socket.AF_INET
        net, _, length = dst.partition("/")
        spec = {"family": family, "table": table, "proto": self.settings.route_protocol,
                "dst_len": int(length)}
        if int(length):
            spec["dst"] = net
        if attrs.get("gateway"):
            spec["gateway"] = attrs["gateway"]
        if attrs.get("dev"):
            index = self._index(attrs["dev"])
            if index is None:
                raise RuntimeError(f"uplink {attrs['dev']} does not exist")
            spec["oif"] = index
        return spec

    def _apply_route(self, change: Change) -> None:
        if change.action is Action.DELETE:
            assert change.old is not None
            spec = self._route_spec(change.key, {"gateway": change.old.get("gateway")})
            self._ignore(errno.ESRCH, self.ipr.route, "del", **spec)
        else:
            assert change.new is not None
            self.ipr.route("replace", **self._route_spec(change.key, change.new))
        self.writes += 1

    def _apply_sysctl(self, change: Change) -> None:
        if change.new is None:
            return                                   # sysctls are set, never "removed"
        name = change.key[0]
        if change.old is None and self.sysctl_get(name) is None:
            raise RuntimeError(f"sysctl {name} does not exist here (is ip_vs loaded?)")
        self.sysctl_set(name, change.new["value"])
        self.sysctl_writes += 1

    @staticmethod
    def _ignore(code: int, func, *args, **kwargs) -> None:
        try:
            func(*args, **kwargs)
        except Exception as exc:
            if getattr(exc, "code", None) != code:
                raise

    # ------------------------------------------------------------------ sysctl, lookup

    def sysctl_get(self, name: str) -> str | None:
        from dcnet.sysio import netns as netns_mod

        try:
            if self.netns:
                return netns_mod.sysctl_get(self.netns, name)
            with open("/proc/sys/" + name.replace(".", "/")) as fh:
                return fh.read().strip()
        except FileNotFoundError:
            return None

    def sysctl_set(self, name: str, value: str) -> None:
        from dcnet.sysio import netns as netns_mod

        if self.netns:
            netns_mod.sysctl_set(self.netns, name, value)
        else:
            with open("/proc/sys/" + name.replace(".", "/"), "w") as fh:
                fh.write(value)

    def lookup(self, dst: str, src: str) -> dict:
        """``ip route get DST from SRC``: the chosen gateway and device."""
        family = socket.AF_INET6 if ":" in dst else socket.AF_INET
        msg = self.ipr.route("get", dst=dst, src=src, family=family)[0]
        oif = msg.get_attr("RTA_OIF")
        links = self.ipr.get_links(oif) if oif else []
        return {"gateway": msg.get_attr("RTA_GATEWAY"),
                "dev": links[0].get_attr("IFLA_IFNAME") if links else None}
