"""``elbctl verify``: does every VIP's reply path leave by its carrier? (route lookups)

For each VIP of each carrier it asks the kernel ``ip route get <probe> from <VIP>``,
where the probe is the carrier's first client prefix of the VIP's family (or a
documentation address when the carrier lists none), and expects the carrier's uplink and
its gateway of that family (``gateway6`` for the IPv6 VIPs of a dual-stack line). A mismatch names
what the kernel chose instead.
"""

from __future__ import annotations

from dataclasses import dataclass

PROBE = {4: "192.0.2.200", 6: "2001:db8::200"}


@dataclass
class RouteCheck:
    carrier: str
    vip: str
    probe: str
    want_dev: str
    want_gateway: str
    got_dev: str | None = None
    got_gateway: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (self.error is None and self.got_dev == self.want_dev
                and self.got_gateway == self.want_gateway)

    def describe(self) -> str:
        head = f"{'ok  ' if self.ok else 'FAIL'} {self.carrier:<8} from {self.vip} to {self.probe}"
        if self.error:
            return f"{head}: {self.error}"
        got = f"via {self.got_gateway} dev {self.got_dev}"
        want = f"via {self.want_gateway} dev {self.want_dev}"
        return f"{head}: {got}" + ("" if self.ok else f", expected {want}")


def probe_address(carrier, version: int | None = None) -> str:
    """The first host of the carrier's first client prefix of IP ``version`` (default:
    its gateway's family), or a documentation address."""
    version = version or carrier.gateway.version
    for net in carrier.cidrs:
        if net.version == version and net.num_addresses > 2:
            return str(next(net.hosts()))
    return PROBE[version]


def verify(model, routing) -> list[RouteCheck]:
    """One lookup per (carrier, VIP) through ``routing`` (a dcnet.lvs.routing.Routing)."""
    checks = []
    vips: dict[str, set[str]] = {}
    for service in model.services:
        for name, vip in service.vips:
            vips.setdefault(name, set()).add(str(vip))
    for carrier in model.carriers:
        for vip in sorted(vips.get(carrier.name, ())):
            version = 6 if ":" in vip else 4       # dual stack: the family's gateway
            check = RouteCheck(carrier.name, vip, probe_address(carrier, version),
                               carrier.uplink, str(carrier.gateway_of(version)))
            try:
                got = routing.lookup(check.probe, vip)
                check.got_dev, check.got_gateway = got["dev"], got["gateway"]
            except Exception as exc:  # reported per VIP, the others still checked
                check.error = f"route lookup failed: {exc}"
            checks.append(check)
    return checks
