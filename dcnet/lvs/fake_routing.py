"""A stateful fake of :class:`dcnet.lvs.routing.Routing`, the unit tests' stand-in.

It keeps links (name -> up, global addresses), policy rules, routes per table and
sysctls in plain containers, and answers ``read``/``apply`` as the real class does over
rtnetlink: the same state keys, notes and rule specs, the same ``writes`` and
``sysctl_writes`` counts, and the kernel's errors (``EEXIST`` for a duplicate rule or
address, ``ENOENT``/``ESRCH``/``EADDRNOTAVAIL`` for deleting what is not there, which
the real class ignores, ``RuntimeError`` for a missing interface or sysctl).
tests/netns/test_lvs_routing_contract.py runs the same assertions against this fake and
against a :class:`Routing` in a network namespace, which keeps it honest.
``add_rule``/``add_route``/``add_address``/``link_down`` set up what an operator would
with ``ip``; ``fail_at = n`` makes the write request numbered ``n`` (``writes`` before
it) fail once with ``EIO``.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dcnet.lvs.routing import FR_ACT_TO_TBL, RoutingRead
from dcnet.lvs.state import host_bits, norm
from dcnet.plan import Action, Change

RTPROT_BOOT = 3
RULE_FIELDS = ("family", "priority", "table", "action", "src", "src_len", "dst", "dst_len",
               "fwmark", "iifname", "oifname")


class FakeRtnlError(OSError):
    """The fake kernel refused a request; ``code`` holds the errno, as pyroute2's
    NetlinkError does."""

    def __init__(self, code: int):
        super().__init__(code, os.strerror(code))
        self.code = code


@dataclass
class FakeLink:
    up: bool = False
    addresses: dict[str, int] = field(default_factory=dict)    # global address -> prefixlen


class FakeRouting:
    """Rules, routes, addresses, links and sysctls of one imaginary namespace."""

    def __init__(self, settings=None, links: Iterable[str] = (),
                 sysctls: Mapping[str, str] | None = None, link_kinds=("dummy",)):
        self.settings = settings
        self.links: dict[str, FakeLink] = {name: FakeLink(up=True) for name in links}
        self.rules: list[dict] = []
        self.routes: dict[tuple[int, str], dict] = {}     # (table, dst) -> attrs
        self.sysctls: dict[str, str] = dict(sysctls or {})
        self.link_kinds = tuple(link_kinds)
        self.writes = 0
        self.sysctl_writes = 0
        self.fail_at: int | None = None     # this write request fails once (EIO)

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ set-up (ip ...)

    def add_address(self, ifname: str, address: str, prefixlen: int) -> None:
        addresses = self.links[ifname].addresses
        if norm(address) in addresses:
            raise FakeRtnlError(errno.EEXIST)
        addresses[norm(address)] = prefixlen

    def link_down(self, ifname: str) -> None:
        self.links[ifname].up = False

    def add_rule(self, **spec) -> None:
        """``ip rule add``: keys of :data:`RULE_FIELDS` (action defaults to lookup)."""
        rule = {"family": socket.AF_INET6 if ":" in str(spec.get("src", "")) else socket.AF_INET,
                "action": FR_ACT_TO_TBL, "src_len": 0, "dst_len": 0, **spec}
        if "src" in spec and "src_len" not in spec:
            rule["src_len"] = host_bits(spec["src"])
        if any(all(r.get(k) == rule.get(k) for k in RULE_FIELDS) for r in self.rules):
            raise FakeRtnlError(errno.EEXIST)
        self.rules.append(rule)
        self.rules.sort(key=lambda r: r["priority"])

    def del_rule(self, **spec) -> None:
        """``ip rule del``: the first rule matching every field given."""
        for i, rule in enumerate(self.rules):
            if all(rule.get(k) == v for k, v in spec.items()):
                del self.rules[i]
                return
        raise FakeRtnlError(errno.ENOENT)

    def add_route(self, table: int, dst: str, gateway: str | None = None,
                  dev: str | None = None, proto: int = RTPROT_BOOT) -> None:
        """``ip route replace DST [via GATEWAY] [dev DEV] table TABLE proto PROTO``."""
        if dev is not None and dev not in self.links:
            raise FakeRtnlError(errno.ENODEV)
        self.routes[(table, dst)] = {"gateway": gateway, "dev": dev, "proto": proto}

    # ------------------------------------------------------------------ read

    def read(self, carrier_tables: Iterable[int] = (), vips: Iterable[str] = (),
             sysctls: Iterable[str] = ()) -> RoutingRead:
        out = RoutingRead()
        tables, vips = set(carrier_tables), {norm(v) for v in vips}
        link = self.links.get(self.settings.vip_interface)
        if link is not None:
            out.state[("link", (self.settings.vip_interface,))] = {
                "state": "up" if link.up else "down"}
            for address, prefixlen in link.addresses.items():
                out.state[("vip", (address,))] = {"prefixlen": prefixlen}
        self._read_rules(out, tables, vips)
        self._read_routes(out, tables)
        for name in sysctls:
            if name in self.sysctls:
                out.state[("sysctl", (name,))] = {"value": self.sysctls[name]}
        return out

    def _read_rules(self, out: RoutingRead, tables: set[int], vips: set[str]) -> None:
        low, high = self.settings.rule_priority_min, self.settings.rule_priority_max
        seen: set = set()
        for rule in self.rules:
            priority, table, src = rule["priority"], rule["table"], rule.get("src")
            spec = {"family": rule["family"], "priority": priority, "table": table,
                    "action": rule["action"]}
            if src:
                spec.update(src=src, src_len=rule["src_len"])
            if not low <= priority <= high:
                if table in tables or (src and norm(src) in vips):
                    out.notes.append(f"left alone: rule priority {priority} from "
                                     f"{src or 'all'} lookup {table} (outside elbctl's range "
                                     f"{low}-{high})")
                continue
            simple = (src and rule["src_len"] == host_bits(src)
                      and rule["action"] == FR_ACT_TO_TBL and not rule["dst_len"]
                      and not any(rule.get(k) for k in ("iifname", "oifname", "fwmark")))
            if simple:
                key = (norm(src),)
            else:
                selectors = [f"{name} {rule[name]}" for name in
                             ("src", "dst", "fwmark", "iifname", "oifname")
                             if rule.get(name) is not None]
                key = ("other", priority, " ".join(selectors) or "all")
            while key in seen:
                key = (*key[:3], f"#{len(seen)}")
            seen.add(key)
            out.state[("rule", key)] = {"table": table, "priority": priority}
            out.rule_specs[key] = spec

    def _read_routes(self, out: RoutingRead, tables: set[int]) -> None:
        proto = self.settings.route_protocol
        for (table, dst), attrs in self.routes.items():
            if attrs["proto"] == proto:
                out.state[("route", (table, dst))] = {"gateway": attrs["gateway"],
                                                      "dev": attrs["dev"]}
            elif table in tables:
                out.notes.append(f"left alone: route {dst} in carrier table {table} "
                                 f"(protocol {attrs['proto']}, not elbctl's {proto})")

    # ------------------------------------------------------------------ write

    def apply(self, change: Change, rule_specs: Mapping | None = None) -> None:
        if change.kind == "rule":
            self._apply_rule(change, rule_specs or {})
            return
        getattr(self, f"_apply_{change.kind}")(change)

    def _write(self, func, *args, **kwargs) -> None:
        """One write request: counted, like the real class, only when it succeeds."""
        if self.fail_at == self.writes:
            self.fail_at = None
            raise FakeRtnlError(errno.EIO)
        func(*args, **kwargs)
        self.writes += 1

    def _ignore(self, code: int, func, *args, **kwargs) -> None:
        try:
            func(*args, **kwargs)
        except FakeRtnlError as exc:
            if exc.code != code:
                raise

    def _apply_link(self, change: Change) -> None:
        name = change.key[0]
        if change.action is Action.DELETE:
            return
        if name not in self.links:
            if "dummy" not in self.link_kinds:
                raise RuntimeError(f"cannot create VIP interface {name} (kind dummy): "
                                   "not supported; create it (any kind) and apply again")
            self._write(self.links.__setitem__, name, FakeLink())
        self._write(setattr, self.links[name], "up", True)

    def _apply_vip(self, change: Change) -> None:
        link = self.links.get(self.settings.vip_interface)
        if link is None:
            raise RuntimeError(f"VIP interface {self.settings.vip_interface} does not exist")
        address = norm(change.key[0])
        if change.old is not None:
            self._write(link.addresses.pop, address, None)   # EADDRNOTAVAIL is ignored
        if change.new is not None:
            self._write(self.add_address, self.settings.vip_interface, address,
                        change.new["prefixlen"])

    def _rule_spec(self, key: tuple, attrs: Mapping, specs: Mapping) -> dict:
        if key in specs and key[0] == "other":
            return dict(specs[key])
        src = key[0]
        return {"family": socket.AF_INET6 if ":" in src else socket.AF_INET, "src": src,
                "src_len": host_bits(src), "table": attrs["table"],
                "priority": attrs["priority"], "action": FR_ACT_TO_TBL}

    def _apply_rule(self, change: Change, specs: Mapping) -> None:
        if change.old is not None:
            self._write(self._ignore, errno.ENOENT, self.del_rule,
                        **self._rule_spec(change.key, change.old, specs))
        if change.new is not None:
            self._write(self.add_rule, **self._rule_spec(change.key, change.new, specs))

    def _apply_route(self, change: Change) -> None:
        table, dst = change.key
        proto = self.settings.route_protocol
        if change.action is Action.DELETE:
            gateway = change.old.get("gateway") if change.old else None
            self._write(self._ignore, errno.ESRCH, self._del_route, table, dst, proto, gateway)
            return
        dev = change.new.get("dev")
        if dev and dev not in self.links:
            raise RuntimeError(f"uplink {dev} does not exist")
        self._write(self.add_route, table, dst, change.new.get("gateway"), dev, proto)

    def _del_route(self, table: int, dst: str, proto: int, gateway: str | None) -> None:
        found = self.routes.get((table, dst))
        if not found or found["proto"] != proto or (gateway and found["gateway"] != gateway):
            raise FakeRtnlError(errno.ESRCH)
        del self.routes[(table, dst)]

    def _apply_sysctl(self, change: Change) -> None:
        if change.new is None:
            return
        name = change.key[0]
        if name not in self.sysctls:
            raise RuntimeError(f"sysctl {name} does not exist here (is ip_vs loaded?)")
        self.sysctls[name] = change.new["value"]
        self.sysctl_writes += 1
