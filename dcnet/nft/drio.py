"""The DR table's I/O (see :mod:`dcnet.nft.dr`): its listing and the real servers' devices.

:func:`listing` reads ``table netdev dcnet`` the way :mod:`dcnet.nft.nftio` reads ``table
inet dcnet``: one terse ``nft -j -t list table`` (no Maglev slots) and the two DR maps'
elements, only when the table exists. :func:`resolve` finds, in the director's namespace,
the interface each real server is reached on (``fwd ... device``): one rtnetlink ``route
get`` per address; a real server that is not on a link of the director (a route via a
gateway) or is one of its own addresses cannot be a DR target and refuses the plan, as
does a DR VIP's carrier uplink missing from the namespace (its ingress chain could not
be made).
"""

from __future__ import annotations

from collections.abc import Iterable

from dcnet.nft import dr
from dcnet.nft.nftio import NftError, NftUnavailable, listing_digest
from dcnet.sysio import netns as netns_mod

RTN_UNICAST = 1


def listing(nft) -> tuple[str | None, tuple[str, ...]]:
    """(terse table listing or None, the dr4/dr6 maps' listings)."""
    table = nft.list_json("table", dr.FAMILY, dr.TABLE, terse=True)
    if table is None:
        return None, ()
    maps = [nft.list_json("map", dr.FAMILY, dr.TABLE, name) for name in dr.MAPS]
    return table, tuple(m for m in maps if m is not None)


def digest_suffix(table: str | None, maps: tuple[str, ...]) -> str:
    """What a DR table adds to the read digest (nothing when there is none)."""
    return "" if table is None else "+dr:" + listing_digest(table, maps)


def _resolve_here(rips: tuple[str, ...], devices: tuple[str, ...] = ()
                  ) -> dict[str, tuple[str | None, str]]:
    from pyroute2 import IPRoute

    out: dict[str, tuple[str | None, str]] = {}
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for device in devices:
            if device not in names.values():
                out[f"uplink {device}"] = (None, "no such interface on the director")
        for rip in rips:
            try:
                (route,) = ipr.route("get", dst=rip)[:1]
            except Exception as exc:  # no route: netlink error
                out[rip] = (None, f"no route ({exc})")
                continue
            if route["type"] != RTN_UNICAST:
                out[rip] = (None, "an address of the director itself")
            elif route.get_attr("RTA_GATEWAY"):
                out[rip] = (None, f"routed via {route.get_attr('RTA_GATEWAY')}, not on a link")
            else:
                out[rip] = (names.get(route.get_attr("RTA_OIF")), "")
    return out


def resolve(netns: str | None, rips: Iterable[str], devices: Iterable[str] = ()
            ) -> dict[str, str]:
    """{real server address: the director's interface it is on}; NftError naming every
    address that cannot be forwarded to (and every ingress device in ``devices`` the
    namespace does not have)."""
    rips, devices = tuple(rips), tuple(devices)
    if not rips and not devices:
        return {}
    if netns and not netns_mod.exists(netns):
        raise NftUnavailable(f"network namespace {netns!r} does not exist")
    found = (netns_mod.run_in(netns, _resolve_here, rips, devices) if netns
             else _resolve_here(rips, devices))
    bad = [f"{rip}: {why}" for rip, (dev, why) in found.items() if dev is None]
    if bad:
        raise NftError("DR real server(s) the director cannot forward to unchanged: "
                       + "; ".join(bad))
    return {rip: dev for rip, (dev, _why) in found.items()}


def infra(netns: str | None, found) -> dr.DrInfra | None:
    """The DR table's shared objects for the DR inputs among ``found`` (None: none)."""
    return infra_for(netns, *dr.needs(found))


def infra_for(netns: str | None, devices: tuple[str, ...], rips: tuple[str, ...]
              ) -> dr.DrInfra | None:
    """The DR table's shared objects for these ingress devices and real servers (sorted:
    :func:`dcnet.nft.dr.needs`'s), None without devices."""
    if not devices:
        return None
    devs = resolve(netns, rips, devices)
    return dr.DrInfra(devices, tuple((rip, devs[rip]) for rip in rips))
