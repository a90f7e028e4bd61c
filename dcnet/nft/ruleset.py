"""The nft target's state vocabulary and the desired ruleset of a model (pure).

Everything lives in dcnet's own table, ``table inet dcnet``: one table for both address
families (one listing, one generation-id record, one transaction), with one services map
per family (``services`` keyed ``ipv4_addr``, ``services6`` keyed ``ipv6_addr``); every
other object belongs to one VIP, whose family decides its expressions (``ip saddr`` or
``ip6 saddr``, ``dnat ip to A:P`` or ``dnat ip6 to [A]:P``, ``ipv4_addr`` or ``ipv6_addr``
affinity sets). Object names carry addresses with ``:`` written ``_`` (nft identifiers
have no colon): ``svc-tcp-2001_db8__10-80``. Kinds, in creation order (deletes run in
reverse)::

    table     ("services",) / ("services6",)       {type}     the verdict map VIP . proto . port
              ("cin",) ("cin6",) ("cout",) ("cout6",) {type}  counter maps VIP . proto . port
    counter   (proto, vip, port, which)            {}         named counter: conns, in, out
    tally     (proto, vip, port, which)            {counter}  counter-map element (in, out)
    affinity  (proto, vip, port, rip, rport, timeout)  {timeout}  saddr set, dynamic, timeout
    backend   (proto, vip, port, rip, rport)       {rules}    chain: [refresh affinity,] DNAT
    maglev    (proto, vip, port, digest)           {size}     map slot -> goto backend chain
    service   (proto, vip, port)                   {rules}    chain: affinity, then scheduler
    element   (proto, vip, port)                   {chain}    services map element -> goto
    hook      (chain,)                             {hook, priority, rules}  base chains
    legacy    ("ip", "dcnet")                      {}         the pre-inet table: deleted

(``route`` and ``rule``, carrier return routing, come first; see :mod:`dcnet.nft.carriers`;
with it every service chain starts with ``ct mark set <carrier table>`` and the
``replies`` base chain copies that mark to reply packets.)

Counters (read by ``elbctl exporter``, :mod:`dcnet.metrics.nft`, with one ``nft -j list
counters table inet dcnet``): per VIP:port three named counter objects, ``cn-`` (new
connections: the service chain's first rule, ``counter name cn-...``; a nat chain sees only
a connection's first packet), ``ci-`` (every packet to the VIP:port: the ``traffic-in``
base chain, filter prerouting before DNAT, ``counter name ip daddr . meta l4proto . th
dport map @cin``) and ``co-`` (every reply from it: ``traffic-out``, filter postrouting
after the reply's source is un-NATed, ``ip saddr . meta l4proto . th sport`` into
``@cout``); ``cin6``/``cout6`` for IPv6 VIPs.

A chain's ``rules`` are the short digests of its rules' text, which every rule carries as
its comment (``dcnet:<digest>``); a rule without one reads as ``?`` and is rewritten.
A maglev map's name carries its table's digest, so a new table is a new map swapped in
by the service chain's update in the same transaction, then the old map is deleted.

Schedulers: ``mh`` is Maglev keyed on ``jhash ip saddr . th sport`` (a flow hash; ``ip6
saddr`` for IPv6 VIPs), ``sh`` Maglev keyed on ``jhash ip saddr`` (source hashing); every
other IPVS scheduler name is
served by weighted random: up to RULES_MAX active backends one rule each,
``numgen random mod R < w goto backend`` (R: the weight not yet passed over), above it
``numgen random mod W vmap`` with a share of W per backend (as kube-proxy does): the
common case creates no set per service (sets made bulk creation slow). Weight 0 (drain)
leaves a backend out of new-flow selection and of affinity lookups; its chain stays, and
conntrack keeps established flows on it.
Only NAT forwarding is rendered (NAT cannot cross families: a VIP's real servers of the
other family are left out with a note); TUN ports are skipped with a note, and DR
ports too unless the target renders them (``--nft-dr``: :mod:`dcnet.nft.dr`, in
``table netdev dcnet``; :func:`build` takes its inputs and table-wide objects); see
docs/nft.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from dcnet.health.checks import key_of
from dcnet.lvs.layout import effective_servers, layouts
from dcnet.nft import flat, maglev

FAMILY, TABLE = "inet", "dcnet"
T = f"{FAMILY} {TABLE}"
LEGACY = ("ip", "dcnet")                            # the IPv4-only table of before
KIND_ORDER = ("route", "rule",                      # rtnetlink: dcnet.nft.carriers
              "rerender",                           # the table deleted first (script)
              "table", "classes", "counter", "tally", "affinity", "backend", "maglev",
              "service", "element", "lbgroup", "lb", "flat", "hook",
              # forward: dr (--nft-dr), table netdev dcnet: dcnet.nft.dr
              "drtable", "drmap", "drserver", "drmaglev", "drservice", "drelement", "drhook",
              "legacy")
NFT_KINDS = KIND_ORDER[2:]
SERVICES_MAP, SERVICES_MAP6 = "services", "services6"
MAP_TYPES = {SERVICES_MAP: "ipv4_addr . inet_proto . inet_service",
             SERVICES_MAP6: "ipv6_addr . inet_proto . inet_service"}
SERVICES_TYPE = MAP_TYPES[SERVICES_MAP]
COUNTER_MAPS = {("in", 4): "cin", ("in", 6): "cin6", ("out", 4): "cout", ("out", 6): "cout6",
                ("conns", 4): "cnew", ("conns", 6): "cnew6"}     # cnew: flat VIP:ports only
MAP_TYPES.update({name: MAP_TYPES[SERVICES_MAP6 if family == 6 else SERVICES_MAP]
                  for (_which, family), name in COUNTER_MAPS.items()})
COUNTER_PREFIX = {"conns": "cn", "in": "ci", "out": "co"}
HOOKS = {"prerouting": ("nat", "prerouting", -100), "output": ("nat", "output", -100),
         "replies": ("filter", "prerouting", -150),    # replies: carrier routing only
         "traffic-in": ("filter", "prerouting", -150),  # before DNAT: daddr is the VIP
         "traffic-out": ("filter", "postrouting", 200),  # after un-NAT: saddr is the VIP
         # right after DNAT: a weight pattern's scratch packet mark back to 0
         "lbmark": ("filter", "prerouting", -99), "lbmark-out": ("filter", "output", -99)}
HOOK_RULES = (f"ip daddr . meta l4proto . th dport vmap @{SERVICES_MAP}",
              f"ip6 daddr . meta l4proto . th dport vmap @{SERVICES_MAP6}", *flat.HOOK_RULES)
LB_CHAINS = flat.chains()                # the flat layout's fixed chains: name -> rules
TRAFFIC_RULES = {
    "traffic-in": ("counter name ip daddr . meta l4proto . th dport map @cin",
                   "counter name ip6 daddr . meta l4proto . th dport map @cin6"),
    "traffic-out": ("counter name ip saddr . meta l4proto . th sport map @cout",
                    "counter name ip6 saddr . meta l4proto . th sport map @cout6"),
    "lbmark": (flat.patterns.RESTORE_RULE,), "lbmark-out": (flat.patterns.RESTORE_RULE,)}
JHASH_SEED = "0x6463"     # fixed: every director hashes a flow to the same slot
MAGLEV_SCHEDULERS = {"mh": "{saddr} . th sport", "sh": "{saddr}"}
ELEMENT_CHUNK = 4096       # map elements per "add element" command
EXPAND_MAX = 64            # weighted maps up to this many values list every value
RULES_MAX = 32             # up to this many active backends: one numgen rule each

Ident = tuple[str, tuple]


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is6(address: str) -> bool:
    return ":" in address


def saddr(vip: str) -> str:
    """The source-address expression of a VIP's family."""
    return "ip6 saddr" if is6(vip) else "ip saddr"


def services_map(vip: str) -> str:
    return SERVICES_MAP6 if is6(vip) else SERVICES_MAP


def joined_name(prefix: str, key: tuple) -> str:
    """An nft identifier from a key: its parts joined by ``-``, ``:`` written ``_``."""
    return prefix + "-".join(str(p).replace(":", "_") for p in key)


def svc_name(key3: tuple) -> str:
    return joined_name("svc-", key3)


def backend_name(key5: tuple) -> str:
    return joined_name("be-", key5)


def affinity_name(key6: tuple) -> str:
    return joined_name("aff-", key6)


def maglev_name(key4: tuple) -> str:
    return joined_name("mh-", key4)


def counter_name(key4: tuple) -> str:
    """``cn-``/``ci-``/``co-`` and the VIP:port of a counter ``(proto, vip, port, which)``."""
    return joined_name(COUNTER_PREFIX[key4[3]] + "-", key4[:3])


def counter_map(key4: tuple) -> str:
    """The counter map holding a ``tally`` ``(proto, vip, port, in|out)``."""
    return COUNTER_MAPS[(key4[3], 6 if is6(key4[1]) else 4)]


def parse_name(name: str) -> Ident | None:
    """The (kind, key) an object of this name stands for; None for a foreign name."""
    if name in HOOKS:
        return "hook", (name,)
    if name in MAP_TYPES or name in flat.TABLES:
        return "table", (name,)
    if name in LB_CHAINS:
        return _lb_kind(name), (name,)
    family = flat.parse_class_name(name)
    if family is not None:
        return "classes", (family,)
    prefix, _, rest = name.partition("-")
    parts = [p.replace("_", ":") for p in rest.split("-")]
    sizes = {"svc": ("service", 3), "be": ("backend", 5), "aff": ("affinity", 6),
             "mh": ("maglev", 4), "cn": ("counter", 3), "ci": ("counter", 3),
             "co": ("counter", 3)}
    if prefix not in sizes or len(parts) != sizes[prefix][1]:
        return None
    kind = sizes[prefix][0]
    try:
        key = (parts[0], parts[1], int(parts[2]))
        if kind in ("backend", "affinity"):
            key += (parts[3], int(parts[4]))
        if kind == "affinity":
            key += (int(parts[5]),)
        if kind == "maglev":
            key += (parts[3],)
        if kind == "counter":
            key += ({v: k for k, v in COUNTER_PREFIX.items()}[prefix],)
    except ValueError:
        return None
    return kind, key


def rule(chain: str, text: str) -> tuple[str, str]:
    """(digest, the ``add rule`` command) of one rule of ``chain``."""
    d = digest(text)
    return d, f'add rule {T} {chain} {text} comment "dcnet:{d}"'


class Backend(NamedTuple):
    key: tuple          # (proto, vip, port, rip, rport)
    weight: int


@dataclass(frozen=True)
class Desired:
    """The desired state and, per object, the commands that fill it (after creation)."""

    state: Mapping
    bodies: Mapping
    notes: tuple[str, ...]


class _Builder:
    def __init__(self, maglev_size: int):
        self.state: dict = {}
        self.bodies: dict = {}
        self.maglev_size = maglev_size

    def add(self, ident: Ident, attrs: dict, body: tuple[str, ...] = ()) -> None:
        self.state[ident] = attrs
        if body:
            self.bodies[ident] = body

    def chain(self, kind: str, key: tuple, name: str, texts: list[str],
              extra: dict | None = None) -> None:
        pairs = [rule(name, t) for t in texts]
        self.add((kind, key), {**(extra or {}), "rules": tuple(d for d, _ in pairs)},
                 tuple(cmd for _, cmd in pairs))

    def infrastructure(self, marks: tuple[int, ...] = ()) -> None:
        for name, map_type in MAP_TYPES.items():
            self.add(("table", (name,)), {"type": map_type})
        for name, (_word, _decl, listed) in flat.TABLES.items():
            self.add(("table", (name,)), {"type": listed})
        for f in flat.KEY:
            self.add(("classes", (f,)), {"sets": flat.class_sets(f)})
        for name, rules in LB_CHAINS.items():     # lb4-G before lb4, which jumps to them
            self.chain(_lb_kind(name), (name,), name, rules)
        for name, (_type, hook, priority) in HOOKS.items():
            rules = list(TRAFFIC_RULES.get(name, HOOK_RULES))
            if name == "replies":
                if not marks:
                    continue
                # a rule per mark, not ``ct mark { 101, 102 }``: no anonymous set, so
                # a big sync can replay the table's rules (dcnet.nft.bulk)
                rules = [f"ct direction reply ct mark {m} meta mark set ct mark"
                         for m in marks]
            self.chain("hook", (name,), name, rules, {"hook": hook, "priority": priority})

    def service(self, key3: tuple, scheduler: str, persistence: int,
                backends: list[Backend], mark: int = 0) -> None:
        proto, vip = key3[0], key3[1]
        name = svc_name(key3)
        active = [b for b in backends if b.weight > 0]
        is_flat = flat.eligible(scheduler in MAGLEV_SCHEDULERS, persistence,
                                [b.weight for b in active])
        for which in COUNTER_PREFIX:
            self.add(("counter", (*key3, which)), {})
            if which != "conns" or is_flat:
                self.add(("tally", (*key3, which)), {"counter": counter_name((*key3, which))})
        if is_flat:
            self.add(("flat", key3), flat.attrs(
                [(_canonical(b.key[3]), b.key[4], b.weight) for b in active], mark))
            return
        texts: list[str] = [f"counter name {counter_name((*key3, 'conns'))}"]
        texts += [f"ct mark set {mark}"] if mark else []
        for b in backends:
            be_texts = []
            if persistence:
                aff = affinity_name((*b.key, persistence))
                self.add(("affinity", (*b.key, persistence)), {"timeout": persistence})
                be_texts.append(f"update @{aff} {{ {saddr(vip)} }}")
                if b.weight > 0:
                    texts.append(f"{saddr(vip)} @{aff} goto {backend_name(b.key)}")
            rip, rport = b.key[3], b.key[4]
            to = f"ip6 to [{rip}]:{rport}" if is6(rip) else f"ip to {rip}:{rport}"
            be_texts.append(f"meta l4proto {proto} dnat {to}")
            self.chain("backend", b.key, backend_name(b.key), [" ".join(be_texts)])
        if not active:
            texts.append("drop")
        elif scheduler in MAGLEV_SCHEDULERS:
            texts.append(self.maglev(key3, scheduler, active))
        elif len(active) == 1:
            texts.append(f"goto {backend_name(active[0].key)}")
        elif len(active) <= RULES_MAX:
            texts += weighted_rules(active)
        else:
            texts.append(weighted_vmap(active))
        self.chain("service", key3, name, texts)
        self.add(("element", key3), {"chain": name})

    def maglev(self, key3: tuple, scheduler: str, active: list[Backend]) -> str:
        # seeded by the real servers (address), not the chain names: every service with
        # the same servers and weights builds the same table (IPVS sh across services)
        key4, size, body = maglev_map(T, key3, active, lambda b: backend_name(b.key),
                                      self.maglev_size)
        self.add(("maglev", key4), {"size": size}, body)
        hashed = MAGLEV_SCHEDULERS[scheduler].format(saddr=saddr(key3[1]))
        return f"jhash {hashed} mod {size} seed {JHASH_SEED} vmap @{maglev_name(key4)}"


def maglev_map(table: str, key3: tuple, active: list[Backend], chain_of,
               minimum: int) -> tuple[tuple, int, tuple[str, ...]]:
    """The Maglev map of a VIP:port in ``table`` (``inet dcnet`` or DR's ``netdev
    dcnet``): its key (the VIP:port and the table's digest), size, and the commands that
    fill it, each slot going to ``chain_of(backend)``. Seeded by the real servers
    (:func:`dcnet.nft.maglev.server_ids`), never by chain names."""
    by_id = dict(zip(maglev.server_ids([b.key[3:5] for b in active]), active, strict=True))
    weights = {i: b.weight for i, b in by_id.items()}
    size = maglev.table_size(len(weights), minimum)
    slots = maglev.build(weights, size)
    names = [chain_of(by_id[i]) for i in maglev.names_of(weights)]
    key4 = (*key3, maglev.table_digest(names, slots))
    map_name = maglev_name(key4)
    body = []
    for start in range(0, size, ELEMENT_CHUNK):
        elems = ", ".join(f"{slot} : goto {names[slots[slot]]}"
                          for slot in range(start, min(size, start + ELEMENT_CHUNK)))
        body.append(f"add element {table} {map_name} {{ {elems} }}")
    return key4, size, tuple(body)


def _reduced(active: list[Backend]) -> list[int]:
    return flat.reduced([b.weight for b in active])


def weighted_rules(active: list[Backend]) -> list[str]:
    """One rule per backend, each drawing ``numgen random mod R < w`` with R the weight
    not yet passed over: backend i is chosen with probability w_i / W (the product
    telescopes), with no set at all (iptables kube-proxy's ``statistic`` chain)."""
    weights = _reduced(active)
    remaining = sum(weights)
    out = []
    for b, w in zip(active[:-1], weights, strict=False):
        out.append(f"numgen random mod {remaining} < {w} goto {backend_name(b.key)}")
        remaining -= w
    return [*out, f"goto {backend_name(active[-1].key)}"]


def weighted_vmap(active: list[Backend]) -> str:
    """``numgen random mod W vmap { ... }`` with a share of W per backend by weight.

    Weights are divided by their GCD; up to EXPAND_MAX values the map lists every value
    (a hash set), above it one range per backend (an interval set: markedly slower to
    create in bulk, see docs/nft.md)."""
    weights = _reduced(active)
    total = sum(weights)
    parts, low = [], 0
    for b, w in zip(active, weights, strict=True):
        high = low + w - 1
        name = backend_name(b.key)
        if total <= EXPAND_MAX:
            parts += [f"{v} : goto {name}" for v in range(low, high + 1)]
        else:
            parts.append(f"{low}-{high} : goto {name}" if high > low else f"{low} : goto {name}")
        low = high + 1
    return f"numgen random mod {total} vmap {{ {', '.join(parts)} }}"


@dataclass(frozen=True)
class ServiceInput:
    """Everything one VIP:port's objects are derived from (its digest keys the fast path)."""

    key3: tuple
    scheduler: str
    persistence: int
    backends: tuple[Backend, ...]
    maglev_size: int
    mark: int = 0                 # carrier routing: the connection mark (carrier table)

    def digest(self) -> str:
        parts = (self.key3, self.scheduler, self.persistence, self.backends,
                 self.maglev_size, self.mark)
        if self.scheduler in MAGLEV_SCHEDULERS:    # a record of chain-name seeds is stale
            parts += (maglev.SEEDS,)
        return digest(repr(parts))


def group_of(ident: Ident) -> tuple:
    """The VIP:port an object belongs to; () for the table's own objects."""
    kind, key = ident
    return () if kind in ("table", "hook", "lb", "lbgroup", "classes", "route", "rule", "legacy",
                          "rerender",
                          "drtable", "drmap", "drserver", "drhook") else tuple(key[:3])


def inputs(model, registry: Mapping | None = None, maglev_size: int = maglev.DEFAULT_SIZE,
           marks: Mapping[str, int] | None = None,
           down: frozenset[str] = frozenset()) -> tuple[dict, tuple[str, ...]]:
    """({(proto, vip, port): ServiceInput}, notes) of the model (plus the LVS-style
    dynamic registry, if given): what :func:`build` renders. A backend whose health
    check (:func:`dcnet.health.checks.key_of`) is in ``down`` gets weight 0."""
    out: dict = {}
    skipped: dict[str, int] = {}
    crossed = 0
    checks = {s.name: s.health_check for s in model.services} if down else {}
    unhealthy = 0
    for layout in layouts(model):
        entries = (registry or {}).get(layout.name)
        servers = effective_servers(layout, dict(entries)) if entries else layout.servers
        for carrier, vip in layout.vips:
            for port in layout.ports:
                why = _unsupported(vip, port.forward)
                if why:
                    skipped[why] = skipped.get(why, 0) + 1
                    continue
                key3 = (port.protocol, vip, port.port)
                if key3 in out:
                    continue
                same = [s for s in servers if is6(s.address) == is6(vip)]
                crossed += len(servers) - len(same)
                backends = tuple(Backend((*key3, s.address, s.port or port.backend_port),
                                         s.weight) for s in same)
                if down and layout.name in checks:
                    backends, n = health_weights(backends, checks[layout.name], down)
                    unhealthy += n
                out[key3] = ServiceInput(key3, port.scheduler, port.persistence, backends,
                                         maglev_size, (marks or {}).get(carrier, 0))
    notes = tuple(f"{n} VIP port(s) skipped: {why}" for why, n in sorted(skipped.items()))
    if unhealthy:
        notes += (f"{unhealthy} backend(s) at weight 0: health check down",)
    if crossed:
        notes += (f"{crossed} real server(s) left out of VIP ports of the other address "
                  "family (NAT cannot cross IPv4/IPv6)",)
    return out, notes


def health_weights(backends: tuple[Backend, ...], check, down: frozenset[str]
                   ) -> tuple[tuple[Backend, ...], int]:
    """``backends`` with weight 0 where ``check`` of their server is in ``down``, and how
    many were set so."""
    out, n = [], 0
    for b in backends:
        key = key_of(check, b.key[3], b.key[4])
        if key is not None and b.weight and key.text in down:
            b, n = b._replace(weight=0), n + 1
        out.append(b)
    return tuple(out), n


def build(services, infrastructure: bool = True, notes: tuple[str, ...] = (),
          marks: tuple[int, ...] = (), dr_infra=None) -> Desired:
    """The objects of ``services`` (ServiceInputs) and, if asked, the table's own
    (``marks``: the carrier marks the replies chain restores; none: no such chain;
    ``dr_infra``: the DR table's shared objects, :mod:`dcnet.nft.dr`)."""
    from dcnet.nft import dr

    b = _Builder(maglev.DEFAULT_SIZE)
    if infrastructure:
        b.infrastructure(tuple(sorted(set(marks))))
        if dr_infra is not None:
            dr.render_infra(b, dr_infra)
    for s in services:
        b.maglev_size = s.maglev_size
        if getattr(s, "forward", "nat") == "dr":
            dr.render_service(b, s)
            continue
        b.service(s.key3, s.scheduler, s.persistence, list(s.backends), s.mark)
    return Desired(MappingProxyType(b.state), MappingProxyType(b.bodies), notes)


def desired(model, registry: Mapping | None = None,
            maglev_size: int = maglev.DEFAULT_SIZE) -> Desired:
    """The ruleset the model asks for (plus the LVS-style dynamic registry, if given)."""
    found, notes = inputs(model, registry, maglev_size)
    return build(found.values(), True, notes)


def _lb_kind(name: str) -> str:
    """``lbgroup`` for a group chain (``lb4-G``, created before ``lb4``), else ``lb``."""
    return "lbgroup" if "-" in name else "lb"


def _canonical(address: str) -> str:
    """An IPv6 address as nft prints it (IPv4 addresses of the model already are)."""
    if ":" not in address:
        return address
    import ipaddress

    return str(ipaddress.ip_address(address))


def _unsupported(vip: str, forward: str) -> str | None:
    if forward == "dr":       # rendered by dcnet.nft.dr when the target is asked to
        return "forward dr is rendered only with --nft-dr (docs/nft.md)"
    if forward != "nat":
        return (f"forward {forward} has no nftables equivalent here; only nat is "
                "rendered (docs/nft.md)")
    return None
