"""Carrier-aware return routing for the nft target (``--nft-carrier-routing``).

A NAT reply leaves the director by the carrier its request came in on. IPVS reroutes
the reply after un-NATing it (``snat_reroute``); with nftables the reply's source is
rewritten only in postrouting, after the routing decision, so ``from VIP`` rules never
match it. Instead:

- the service chain of a VIP marks the connection with its carrier's routing table
  number (``ct mark set 101``) on its first packet (:mod:`dcnet.nft.ruleset`);
- the ``replies`` chain (filter, prerouting, priority mangle) copies that mark to every
  reply packet (``ct direction reply ct mark 101 meta mark set ct mark``, a rule per
  carrier mark);
- here: one policy rule per carrier, ``fwmark TABLE lookup TABLE`` at the model's
  ``lvs.rule_priority_min``, and the carrier table's default route via its gateway on
  its uplink (route protocol ``lvs.route_protocol``), through rtnetlink.

Both families: a carrier's IPv4 ``gateway`` and IPv6 ``gateway6`` each get the rule and
the default route in their family (``ip rule`` / ``ip -6 rule``; one table number, one
mark, for both). Kinds: ``route (table, "0.0.0.0/0" | "::/0") {gateway, dev}``, ``rule
(mark,) {table, priority}`` (IPv4) and ``rule (mark, 6)`` (IPv6). Owned: fwmark rules in
the ``lvs.rule_priority_min..max`` range and routes of the route protocol in the carrier
tables, of both families. Each change is one rtnetlink request.
"""

from __future__ import annotations

import errno
import socket

from dcnet.plan import Action, Change, state_digest
from dcnet.sysio import netns as netns_mod

FR_ACT_TO_TBL = 1
DEFAULT, DEFAULT6 = "0.0.0.0/0", "::/0"
FAMILIES = ((socket.AF_INET, DEFAULT), (socket.AF_INET6, DEFAULT6))


def marks(model) -> dict[str, int]:
    """Carrier name -> the connection mark of its VIPs (its routing table number)."""
    return {c.name: c.table for c in model.carriers}


def rule_key(mark: int, family: int) -> tuple:
    return (mark, 6) if family == socket.AF_INET6 else (mark,)


def family_of(change: Change) -> int:
    """The address family a route or rule change is about (from its key)."""
    if change.kind == "route":
        return socket.AF_INET6 if change.key[1] == DEFAULT6 else socket.AF_INET
    return socket.AF_INET6 if change.key[1:] == (6,) else socket.AF_INET


def desired(model) -> dict:
    lvs = model.lvs
    out: dict = {}
    for carrier in model.carriers:
        for gateway in carrier.gateways():
            six = gateway.version == 6
            out[("route", (carrier.table, DEFAULT6 if six else DEFAULT))] = {
                "gateway": str(gateway), "dev": carrier.uplink}
            out[("rule", (carrier.table, 6) if six else (carrier.table,))] = {
                "table": carrier.table, "priority": lvs.rule_priority_min}
    return out


class Routes:
    """The fwmark rules and carrier default routes of one namespace (None: the caller's)."""

    def __init__(self, netns: str | None, priority_min: int, priority_max: int,
                 route_protocol: int):
        self.netns = netns
        self.low, self.high, self.proto = priority_min, priority_max, route_protocol
        self.writes = 0

    def _call(self, func):
        """``func(ipr)`` with an IPRoute opened in the namespace (by a thread that enters
        it: :func:`dcnet.sysio.netns.run_in`; pyroute2's own netns= forks a helper that
        inherits the caller's signal handlers) and closed after."""
        def run():
            from pyroute2 import IPRoute

            ipr = IPRoute()
            try:
                return func(ipr)
            finally:
                ipr.close()

        return netns_mod.run_in(self.netns, run) if self.netns else run()

    def close(self) -> None:
        return None

    def read(self, tables) -> dict:
        return self._call(lambda ipr: self._read(ipr, set(tables)))

    def _read(self, ipr, tables: set) -> dict:
        out: dict = {}
        names: dict = {}
        for family, default in FAMILIES:
            for msg in ipr.get_rules(family=family):
                priority = msg.get_attr("FRA_PRIORITY") or 0
                mark = msg.get_attr("FRA_FWMARK")
                if mark is None or not self.low <= priority <= self.high:
                    continue
                out[("rule", rule_key(mark, family))] = {
                    "table": msg.get_attr("FRA_TABLE") or msg["table"], "priority": priority}
            for msg in ipr.route("dump", family=family):
                table = msg.get_attr("RTA_TABLE") or msg["table"]
                if msg["proto"] != self.proto or table not in tables or msg["dst_len"]:
                    continue
                oif = msg.get_attr("RTA_OIF")
                if oif not in names:
                    links = ipr.get_links(oif) if oif else []
                    names[oif] = links[0].get_attr("IFLA_IFNAME") if links else None
                out[("route", (table, default))] = {"gateway": msg.get_attr("RTA_GATEWAY"),
                                                    "dev": names[oif]}
        return out

    def digest(self, tables) -> str:
        return state_digest(self.read(tables))

    def apply(self, change: Change) -> None:
        self._call(lambda ipr: self._apply(ipr, change))

    def _apply(self, ipr, change: Change) -> None:
        if change.kind == "rule":
            if change.old is not None:
                self._quiet(ipr, errno.ENOENT, "rule", "del",
                            **self._rule(change.key, change.old))
            if change.new is not None:
                ipr.rule("add", **self._rule(change.key, change.new))
                self.writes += 1
            return
        table, family = change.key[0], family_of(change)
        if change.action is Action.DELETE:
            self._quiet(ipr, errno.ESRCH, "route", "del", family=family, table=table,
                        proto=self.proto, dst_len=0)
            return
        found = ipr.link_lookup(ifname=change.new["dev"])
        if not found:
            raise RuntimeError(f"uplink {change.new['dev']} does not exist")
        ipr.route("replace", family=family, table=table, proto=self.proto,
                  dst_len=0, gateway=change.new["gateway"], oif=found[0])
        self.writes += 1

    @staticmethod
    def _rule(key: tuple, attrs: dict) -> dict:
        family = socket.AF_INET6 if key[1:] == (6,) else socket.AF_INET
        return {"family": family, "fwmark": key[0], "table": attrs["table"],
                "priority": attrs["priority"], "action": FR_ACT_TO_TBL}

    def _quiet(self, ipr, code: int, what: str, *args, **kwargs) -> None:
        from pyroute2 import NetlinkError

        try:
            getattr(ipr, what)(*args, **kwargs)
        except NetlinkError as exc:
            if exc.code != code:
                raise
        self.writes += 1
