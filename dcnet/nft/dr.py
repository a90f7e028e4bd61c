"""DR-like forwarding for the nft target (``--nft-dr``): ``forward: dr`` ports (pure).

IPVS DR rewrites only a packet's destination MAC and sends it, destination still the VIP,
to a real server holding the VIP on a non-ARPing interface (``elbctl render
realserver``); the server answers the client directly. nftables does the same with
``fwd ip to RIP device DEV`` (``fwd ip6 to``), which exists only in the ``netdev`` family:
in an ingress chain (kernel >= 5.10) it resolves RIP's neighbour on DEV and transmits the
unchanged packet there. So DR ports live in a second table, ``table netdev dcnet`` (the
family keeps it apart from ``table inet dcnet``; dcnet owns the tables named ``dcnet``)::

    drtable   ("netdev", "dcnet")        {}               the table
    drmap     ("dr4",) / ("dr6",)        {type}           VIP . proto . port : verdict
    drserver  (rip,)                     {rules}          chain rs-RIP: fwd ip to RIP device DEV
    drmaglev  (proto, vip, port, digest) {size}           map slot -> goto rs-RIP
    drservice (proto, vip, port)         {rules}          chain svc-...: jhash ... vmap @mh-...
    drelement (proto, vip, port)         {chain}          dr4/dr6 element -> goto svc-...
    drhook    (device,)                  {hook, priority, rules}  chain in-DEV (ingress):
              ip daddr . meta l4proto . th dport vmap @dr4 (and ip6 ... @dr6)

One ingress chain per device the VIPs' packets arrive on: the uplink of each DR VIP's
carrier (``carriers[].uplink``). DEV of ``fwd`` is the director's interface towards the
real server, found by a route lookup in the director's namespace (:mod:`dcnet.nft.drio`).

Ingress runs before conntrack and the nat hooks: nothing is remembered per connection, so
the backend must be a stateless, stable function of the packet. Every DR port is Maglev:
``sh`` (and any port with ``persistence``) hashes ``ip saddr`` (a client stays on one
server while the table is unchanged; no timeout), every other scheduler (``wrr``, ``rr``,
``mh``, ...) hashes the flow (``ip saddr . th sport``), with the Maglev table's weights
(weighted random would scatter a connection's packets: it is mapped to Maglev with a plan
note). The table is the one the NAT path builds for the same servers and weights
(:mod:`dcnet.nft.maglev`, seeded by addresses, jhash seed ``0x6463``): two directors
send a flow to the same server. Drain (weight 0) rebuilds the table without the server:
its established flows move too (no conntrack to keep them); all at weight 0 drops.
The real server's port is the VIP's port (DR cannot change it); a VIP's real servers of
the other family are left out (no forwarding across families).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dcnet.lvs.layout import effective_servers, layouts
from dcnet.nft import listing, maglev
from dcnet.nft.ruleset import (
    JHASH_SEED,
    Backend,
    digest,
    health_weights,
    is6,
    joined_name,
    maglev_map,
    maglev_name,
    svc_name,
)
from dcnet.plan import Action, Change

FAMILY, TABLE = "netdev", "dcnet"
TD = f"{FAMILY} {TABLE}"
KINDS = ("drtable", "drmap", "drserver", "drmaglev", "drservice", "drelement", "drhook")
INFRA_KINDS = frozenset({"drtable", "drmap", "drserver", "drhook"})
MAPS = {"dr4": "ipv4_addr . inet_proto . inet_service",
        "dr6": "ipv6_addr . inet_proto . inet_service"}
HOOK_RULES = ("ip daddr . meta l4proto . th dport vmap @dr4",
              "ip6 daddr . meta l4proto . th dport vmap @dr6")
PRIORITY = 0
HASHED = {"mh": "{saddr} . th sport", "sh": "{saddr}"}
OFF_NOTE = "forward dr is rendered only with --nft-dr"
COMMENT = listing.COMMENT


@dataclass(frozen=True)
class DrInput:
    """Everything one DR VIP:port's objects are derived from (the fast path's group)."""

    key3: tuple
    scheduler: str                  # as rendered: "mh" (flow hash) or "sh" (source hash)
    backends: tuple[Backend, ...]
    maglev_size: int
    device: str                     # the uplink its packets arrive on
    forward: str = "dr"

    def digest(self) -> str:
        return digest(repr(("dr", self.key3, self.scheduler, self.backends,
                            self.maglev_size, self.device, maglev.SEEDS)))


@dataclass(frozen=True)
class DrInfra:
    """The DR table's shared objects: ingress devices and (real server, its device)."""

    devices: tuple[str, ...]
    servers: tuple[tuple[str, str], ...]


def server_name(rip: str) -> str:
    return joined_name("rs-", (rip,))


def hook_name(device: str) -> str:
    return f"in-{device}"


def map_of(vip: str) -> str:
    return "dr6" if is6(vip) else "dr4"


def rule(chain: str, text: str) -> tuple[str, str]:
    d = digest(text)
    return d, f'add rule {TD} {chain} {text} comment "{COMMENT}{d}"'


def parse_name(name: str) -> tuple[str, tuple] | None:
    """The (kind, key) a DR table object of this name stands for; None if foreign."""
    if name in MAPS:
        return "drmap", (name,)
    prefix, _, rest = name.partition("-")
    if not rest:
        return None
    if prefix == "in":
        return "drhook", (rest,)
    parts = [p.replace("_", ":") for p in rest.split("-")]
    if prefix == "rs" and len(parts) == 1:
        return "drserver", (parts[0],)
    sizes = {"svc": ("drservice", 3), "mh": ("drmaglev", 4)}
    if prefix not in sizes or len(parts) != sizes[prefix][1]:
        return None
    try:
        key = (parts[0], parts[1], int(parts[2]), *parts[3:])
    except ValueError:
        return None
    return sizes[prefix][0], key


# ------------------------------------------------------------------ inputs


_last: tuple | None = None     # (model, extra, result): an agent re-plans the same model


def inputs(model, registry: Mapping | None = None, maglev_size: int = maglev.DEFAULT_SIZE,
           down: frozenset[str] = frozenset()) -> tuple[dict, tuple[str, ...]]:
    """({(proto, vip, port): DrInput}, notes) of the model's ``forward: dr`` ports (the
    last result is reused for the same model object and the same other inputs)."""
    global _last
    extra = (repr(registry) if registry else None, maglev_size, down)
    last = _last
    if last is not None and last[0] is model and last[1] == extra:
        return last[2]
    result = _inputs(model, registry, maglev_size, down)
    _last = (model, extra, result)
    return result


def _inputs(model, registry, maglev_size, down) -> tuple[dict, tuple[str, ...]]:
    out: dict = {}
    uplinks = {c.name: c.uplink for c in model.carriers}
    checks = {s.name: s.health_check for s in model.services} if down else {}
    hashed: dict[str, int] = {}
    crossed = unhealthy = 0
    for layout in layouts(model):
        entries = (registry or {}).get(layout.name)
        servers = effective_servers(layout, dict(entries)) if entries else layout.servers
        for carrier, vip in layout.vips:
            for port in layout.ports:
                key3 = (port.protocol, vip, port.port)
                if port.forward != "dr" or key3 in out:
                    continue
                same = [s for s in servers if is6(s.address) == is6(vip)]
                crossed += len(servers) - len(same)
                backends = tuple(Backend((*key3, s.address, port.port), s.weight)
                                 for s in same)
                if down and layout.name in checks:
                    backends, n = health_weights(backends, checks[layout.name], down)
                    unhealthy += n
                scheduler = "sh" if port.scheduler == "sh" or port.persistence else "mh"
                if port.scheduler not in HASHED or port.persistence:
                    why = ("persistence as source hashing (no timeout)" if port.persistence
                           else f"scheduler {port.scheduler} as Maglev flow hashing")
                    hashed[why] = hashed.get(why, 0) + 1
                out[key3] = DrInput(key3, scheduler, backends, maglev_size, uplinks[carrier])
    notes = tuple(f"{n} DR port(s): {why} (stateless forwarding, docs/nft.md)"
                  for why, n in sorted(hashed.items()))
    if unhealthy:
        notes += (f"{unhealthy} DR backend(s) at weight 0: health check down",)
    if crossed:
        notes += (f"{crossed} real server(s) left out of DR ports of the other address "
                  "family",)
    return out, notes


def extend(found: dict, notes: tuple[str, ...], dr_found: dict, dr_notes: tuple[str, ...]
           ) -> tuple[dict, tuple[str, ...]]:
    """The target's inputs with the DR ones added and the 'DR skipped' note dropped."""
    kept = tuple(n for n in notes if OFF_NOTE not in n)
    return {**found, **dr_found}, kept + dr_notes


def needs(found: Mapping) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(ingress devices, real server addresses) the DR inputs among ``found`` need."""
    drs = [s for s in found.values() if getattr(s, "forward", "nat") == "dr"]
    devices = sorted({s.device for s in drs})
    rips = sorted({b.key[3] for s in drs for b in s.backends})
    return tuple(devices), tuple(rips)


# ------------------------------------------------------------------ rendering


def _chain(b, kind: str, key: tuple, name: str, texts: list[str], extra=None) -> None:
    pairs = [rule(name, t) for t in texts]
    b.add((kind, key), {**(extra or {}), "rules": tuple(d for d, _ in pairs)},
          tuple(cmd for _, cmd in pairs))


def render_infra(b, infra: DrInfra) -> None:
    """The table, its maps, one ``rs-`` chain per real server, one ingress chain per device
    (``b``: a :class:`dcnet.nft.ruleset._Builder`)."""
    b.add(("drtable", (FAMILY, TABLE)), {})
    for name, map_type in MAPS.items():
        b.add(("drmap", (name,)), {"type": map_type})
    for rip, device in infra.servers:
        fam = "ip6" if is6(rip) else "ip"
        _chain(b, "drserver", (rip,), server_name(rip),
               [f'fwd {fam} to {rip} device "{device}"'])
    for device in infra.devices:
        _chain(b, "drhook", (device,), hook_name(device), list(HOOK_RULES),
               {"hook": "ingress", "priority": PRIORITY})


def render_service(b, s: DrInput) -> None:
    """One DR VIP:port: its service chain, Maglev map and element."""
    active = [x for x in s.backends if x.weight > 0]
    name = svc_name(s.key3)
    if not active:
        texts = ["drop"]
    elif len(active) == 1:
        texts = [f"goto {server_name(active[0].key[3])}"]
    else:
        key4, size, body = maglev_map(TD, s.key3, active,
                                      lambda x: server_name(x.key[3]), s.maglev_size)
        b.add(("drmaglev", key4), {"size": size}, body)
        src = "ip6 saddr" if is6(s.key3[1]) else "ip saddr"
        hashed = HASHED[s.scheduler].format(saddr=src)
        texts = [f"jhash {hashed} mod {size} seed {JHASH_SEED} vmap @{maglev_name(key4)}"]
    _chain(b, "drservice", s.key3, name, texts)
    b.add(("drelement", s.key3), {"chain": name})


# ------------------------------------------------------------------ reading


def parse_listing(table: str | None, maps: tuple[str, ...] = ()) -> tuple[dict, tuple]:
    """(state, notes) from ``nft -j -t list table netdev dcnet`` and the dr4/dr6 maps'
    listings (pure)."""
    import ipaddress
    import json

    state: dict = {}
    notes: list[str] = []
    if table is None:
        return state, ()
    state[("drtable", (FAMILY, TABLE))] = {}

    def other(item: dict) -> None:
        if "map" in item or "set" in item:
            obj = item.get("map") or item.get("set")
            ident = parse_name(obj["name"])
            if ident is None or ident[0] not in ("drmap", "drmaglev"):
                notes.append(f"foreign set/map {obj['name']!r} in table {TD} left alone")
            elif ident[0] == "drmap":
                t = obj.get("type")
                state[ident] = {"type": " . ".join(t) if isinstance(t, list) else t}
            else:
                c = obj.get("comment", "")
                size = int(c.split("=", 1)[1]) if c.startswith(COMMENT + "size=") else 0
                state[ident] = {"size": size}
        elif any(k in item for k in ("counter", "flowtable", "quota", "limit")):
            notes.append(f"foreign object in table {TD} left alone")

    chains, rules = listing.split(json.loads(table).get("nftables", []), other)
    state.update(listing.chain_states(chains, rules, parse_name,
                                      ("drhook", "drserver", "drservice"), "drhook", TD,
                                      notes))
    for text in maps:
        for item in json.loads(text).get("nftables", []):
            for key, verdict in (item.get("map") or {}).get("elem", []):
                vip, proto, port = key["concat"]
                target = (verdict.get("goto") or verdict.get("jump") or {}).get("target")
                state[("drelement", (str(proto), str(ipaddress.ip_address(vip)),
                                     int(port)))] = {"chain": target}
    return state, tuple(notes)


# ------------------------------------------------------------------ commands


def _chain_of(kind: str, key: tuple) -> str:
    return {"drserver": lambda: server_name(key[0]), "drservice": lambda: svc_name(key),
            "drhook": lambda: hook_name(key[0])}[kind]()


def commands(change: Change, bodies: Mapping) -> list[str]:
    """The nft commands carrying out one change of a DR kind (see :mod:`dcnet.nft.script`)."""
    from dcnet.nft.script import MissingBody, element_key

    kind, key, action = change.kind, change.key, change.action
    attrs = change.new if change.new is not None else change.old or {}

    def body() -> tuple[str, ...]:
        if (kind, key) not in bodies:
            raise MissingBody(f"no rules for {kind} {key} in the plan's payload")
        return bodies[(kind, key)]

    delete = action is Action.DELETE
    if kind == "drtable":
        return [f"delete table {TD}"] if delete else [f"add table {TD}"]
    if kind == "drmap":
        out = [f"delete map {TD} {key[0]}"] if action is not Action.CREATE else []
        return out if delete else [*out, f"add map {TD} {key[0]} {{ type {MAPS[key[0]]} : "
                                         "verdict; }"]
    if kind == "drmaglev":
        name = maglev_name(key)
        if delete:
            return [f"flush map {TD} {name}", f"delete map {TD} {name}"]
        head = [f"flush map {TD} {name}"] if action is Action.UPDATE else [
            f"add map {TD} {name} {{ typeof numgen random mod 2 : verdict; "
            f"comment \"{COMMENT}size={attrs['size']}\"; }}"]
        return [*head, *body()]
    if kind == "drelement":
        elem, dmap = element_key(key), map_of(key[1])
        out = [f"delete element {TD} {dmap} {{ {elem} }}"] if action is not Action.CREATE else []
        return out if delete else [*out, f"add element {TD} {dmap} {{ {elem} : goto "
                                         f"{attrs['chain']} }}"]
    if kind in ("drserver", "drservice", "drhook"):
        name = _chain_of(kind, key)
        if delete:
            return [f"flush chain {TD} {name}", f"delete chain {TD} {name}"]
        spec = (f' {{ type filter hook ingress device "{key[0]}" priority {PRIORITY}; '
                "policy accept; }" if kind == "drhook" else "")
        head = [f"add chain {TD} {name}{spec}"]
        if action is Action.UPDATE:
            head.append(f"flush chain {TD} {name}")
        return [*head, *body()]
    raise ValueError(f"unknown kind {kind!r}")
