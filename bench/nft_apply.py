"""Benchmark: the nft target's full sync, no-op and one-service update at several sizes,
first-packet latency through a VIP with those tables loaded, and Maglev builds.

    .venv/bin/python bench/nft_apply.py [--services 1000 10000 30000] [--servers 10]
        [--updates 24] [--connects 200] [--no-maglev] [--profile TOP]
        [--commit-probe N]

One lab (bench/nft_established.py's :class:`Lab`: client ``c`` -- director ``d`` -- real
server ``r1`` running an echo server) serves every size in turn, side by side in one run;
the nft target runs in ``d`` (``--nft-netns``). Per size, from an empty table (the table
and the apply record are deleted first), every sync being what ``elbctl apply --target
nft`` runs once the model is loaded (``make_plan`` + ``apply_plan`` under the target's
lock; the model is built from the model's types, not parsed):

1. ``full``: ``services`` NAT services x ``servers`` backends, plus one service on the
   VIP 10.251.0.1:80 -> r1:8080 (one nft transaction);
2. ``no-op``: the same model again (must write nothing), 5 times;
3. ``one``: ``--updates`` one-service updates (service 0's weights changed, then back),
   the model keeping the other services' objects (as an agent holding its model does);
   median and p99 (nearest rank: of 24 updates, the largest), with the writes of each;
4. ``one fresh``: 3 updates of a model built anew (every service a new object, as a
   parsed file gives: every service is hashed once to find it in the memo);
5. first-packet latency: ``--connects`` TCP connects from ``c`` to the VIP (each the
   DNAT of a new connection by the services map, service chain and backend chain),
   median and p99 of connect time.

Prints every size's line, then one table side by side with the ratios and the load
average at each size's start and end. ``--profile TOP``: one more one-service update
per size under cProfile (its TOP functions by own and cumulative time).
``--commit-probe N``: per size, the kernel's time for small raw batches by kind
(:func:`commit_probe`: which changes make nf_tables validate the whole table).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import math
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import nft_established as est

WEIGHTS = "ramp"           # --weights: "ramp" (server j weighs j + 1) or "equal" (all 1)


def model_for(services: int, servers: int, changed: bool = False, extra=()):
    """``services`` NAT services (tcp/80 -> 8080) of ``servers`` real servers each,
    weighted by :data:`WEIGHTS`; ``changed``: the first service's first server weighs
    one more (ramp: every weight +1); ``extra``: more services."""
    from dcnet.model.jobname import JobName
    from dcnet.model.types import Carrier, Forwarding, Model, Port, Protocol, RealServer, Service

    carrier = Carrier("lab", "up0", ipaddress.ip_address("192.0.2.1"), 101,
                      (ipaddress.ip_network("10.0.0.0/8"),), default=True)
    out = []
    for i in range(services):
        vip = ipaddress.ip_address(f"10.{i // 250 % 250}.{i % 250}.1")
        port = Port(80, Protocol.TCP, "wrr", Forwarding.NAT, 0, 8080)
        reals = tuple(RealServer(ipaddress.ip_address(
            f"172.16.{(i * servers + j) // 250 % 250}.{(i * servers + j) % 250 + 1}"),
            _weight(j, changed and i == 0)) for j in range(servers))
        job = JobName(f"j{i}", f"s{i}", f"c{i % 50}", f"p{i % 10}", "o", "bench")
        out.append(Service(job, (("lab", vip),), (port,), reals))
    return Model("bench", (carrier,), (*out, *extra))


def _weight(j: int, changed: bool) -> int:
    if WEIGHTS == "equal":
        return 2 if changed and j == 0 else 1
    return j + 2 if changed else j + 1


def sync(options: dict, model) -> tuple[float, float, int, int]:
    """(plan seconds, apply seconds, changes, nft transactions) of one sync."""
    from dcnet.target import apply_plan, make_plan, registry

    target = registry.create("nft", **options)
    with target.lock(600):
        started = time.perf_counter()
        plan = make_plan(target, model)
        planned = time.perf_counter()
        result = apply_plan(target, plan, force=True)
        done = time.perf_counter()
    if not result.ok:
        raise SystemExit(f"apply failed: {result.to_text()[-2000:]}")
    return planned - started, done - planned, len(plan.changes), \
        result.writes["nft_transactions"]


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def connect_times(lab, count: int) -> list[float]:
    """``count`` TCP connects from the client namespace to the VIP (seconds each)."""
    import socket

    from dcnet.sysio import netns as netns_mod

    def run() -> list[float]:
        out = []
        for _ in range(count):
            sock = socket.socket()
            sock.settimeout(10)
            started = time.perf_counter()
            sock.connect((est.VIP, 80))
            out.append(time.perf_counter() - started)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        return out

    return netns_mod.run_in(lab.c, run)


def profiled(options: dict, model, top: int) -> None:
    """One more one-service update under cProfile: its ``top`` functions by own time
    and by cumulative time."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    sync(options, model)
    prof.disable()
    for order in ("tottime", "cumulative"):
        pstats.Stats(prof, stream=sys.stdout).sort_stats(order).print_stats(top)


PROBE_CHAIN = "probe-chain"
PROBE_SET = "aff-tcp-10.255.0.1-9-10.255.0.2-9-60"     # parsed as an affinity set
PROBE_RULES = {   # a rule of an unreferenced chain: which expressions make a commit slow
    "counter": "counter",
    "counter name (objref)": "counter name cn-tcp-10.0.0.1-80",
    "numgen cmp": "numgen random mod 6 < 1 counter",
    "goto (immediate verdict)": "goto be-tcp-10.0.0.1-80-172.16.0.1-8080",
    "jump (immediate verdict)": "jump be-tcp-10.0.0.1-80-172.16.0.1-8080",
    "accept (immediate verdict, no chain)": "accept",
    "dnat (nat)": "meta l4proto tcp dnat ip to 10.250.1.11:8080",
}


def _elem(set_name: str, key: bytes, goto: str | None) -> bytes:
    """NEWSETELEM/DELSETELEM attributes: one element of ``set_name`` (``goto``: its
    verdict data)."""
    from dcnet.nft import fastpath as fp

    nested = 0x8000
    data = b""
    if goto is not None:
        verdict = fp._attr(1, struct.pack(">i", -4)) + fp._attr_str(2, goto)   # NFT_GOTO
        data = fp._attr(2 | nested, fp._attr(2 | nested, verdict))
    elem = fp._attr(1 | nested, fp._attr(1, key)) + data
    return (fp._attr_str(1, "dcnet") + fp._attr_str(2, set_name)
            + fp._attr(3 | nested, fp._attr(1 | nested, elem)))


def commit_probe(netns: str, repeats: int) -> dict:
    """Seconds the kernel takes to process one small batch (the ``send`` of the raw
    netlink batch, which returns after the commit), median of ``repeats``, per kind of
    change, in ``netns``'s loaded table: a rule of an unreferenced chain per expression
    kind, one element added to and deleted from the services verdict map (``goto``) and
    from an ipv4_addr set (no verdict), and the one-service rewrite of service 0's
    chain. Whatever makes nf_tables validate the table's jump graph shows as a cost that
    grows with the table."""
    import socket

    from dcnet.nft import fastpath as fp
    from dcnet.sysio import netns as netns_mod

    def run(msgs: list) -> float:
        sock = netns_mod.socket_in(netns_mod.path_of(netns), socket.AF_NETLINK,
                                   socket.SOCK_RAW, fp.NETLINK_NETFILTER)
        try:
            batch = fp._batch(msgs)
            started = time.perf_counter()
            fp._send_batch(sock, batch, len(msgs))
            return time.perf_counter() - started
        finally:
            sock.close()

    table = fp._attr_str(fp.A_TABLE, "dcnet")
    chain = table + fp._attr_str(fp.A_CHAIN, PROBE_CHAIN)
    _rules, sets = fp.compile_rules({}, [PROBE_SET])
    run([(fp.MSG["newchain"], fp.F_CREATE, table + fp._attr_str(fp.A_CHAIN_NAME, PROBE_CHAIN)),
         (fp.MSG["newset"], fp.F_CREATE, sets[PROBE_SET] + fp._attr(fp.A_SET_ID,
                                                                    struct.pack(">I", 1)))])
    out: dict[str, float] = {}
    for label, rule in PROBE_RULES.items():
        compiled, _ = fp.compile_rules({PROBE_CHAIN: [f"add rule inet dcnet {PROBE_CHAIN} "
                                                      f"{rule}"]})
        msgs = [(fp.MSG["delrule"], 0, chain),
                (fp.MSG["newrule"], fp.F_CREATE | fp.F_APPEND, chain + compiled[PROBE_CHAIN][0])]
        out[f"rule: {label}"] = statistics.median(run(msgs) for _ in range(repeats))
    vkey = socket.inet_aton("10.255.255.1") + bytes([6, 0, 0, 0]) + struct.pack(">HH", 9, 0)
    svc = "svc-tcp-10.0.0.1-80"
    def elements(label: str, set_name: str, key: bytes, goto: str | None) -> None:
        took = []
        for _ in range(repeats):
            took.append(run([(12, fp.F_CREATE, _elem(set_name, key, goto))]))   # NEWSETELEM
            run([(14, 0, _elem(set_name, key, None))])                          # DELSETELEM
        out[label] = statistics.median(took)

    addr = socket.inet_aton("10.255.255.1")
    elements("element: services map (goto)", "services", vkey, svc)
    elements("element: ipv4_addr set", PROBE_SET, addr, None)
    looked_up = (f"add rule inet dcnet {PROBE_CHAIN} ip saddr @{PROBE_SET} goto "
                 "be-tcp-10.0.0.1-80-172.16.0.1-8080")
    compiled, _ = fp.compile_rules({PROBE_CHAIN: [looked_up]}, [PROBE_SET])
    run([(fp.MSG["delrule"], 0, chain),
         (fp.MSG["newrule"], fp.F_CREATE | fp.F_APPEND, chain + compiled[PROBE_CHAIN][0])])
    elements("element: ipv4_addr set a rule looks up (then goto)", PROBE_SET, addr, None)
    rules = fp.compile_rules({svc: [f"add rule inet dcnet {svc} {r}" for r in (
        "counter name cn-tcp-10.0.0.1-80",
        "numgen random mod 2 < 1 goto be-tcp-10.0.0.1-80-172.16.0.1-8080",
        "goto be-tcp-10.0.0.1-80-172.16.0.2-8080")]})[0][svc]
    schain = table + fp._attr_str(fp.A_CHAIN, svc)
    out["service 0's chain rewritten"] = statistics.median(
        run([(fp.MSG["delrule"], 0, schain)]
            + [(fp.MSG["newrule"], fp.F_CREATE | fp.F_APPEND, schain + r) for r in rules])
        for _ in range(repeats))
    run([(fp.MSG["delrule"], 0, chain),
         (fp.MSG["delchain"], 0, table + fp._attr_str(fp.A_CHAIN_NAME, PROBE_CHAIN)),
         (fp.MSG["delset"], 0, table + fp._attr_str(fp.A_SET_NAME, PROBE_SET))])
    return out


def bench_size(lab, services: int, servers: int, updates: int, connects: int,
               profile: int = 0, probe: int = 0) -> dict:
    from dcnet.nft import inputcache

    vip_service = est.model({lab.addr(1): 1}).services
    base = model_for(services, servers, extra=vip_service)
    fresh_changed = model_for(services, servers, True, extra=vip_service)
    changed = dataclasses.replace(base, services=(fresh_changed.services[0],
                                                  *base.services[1:]))
    subprocess.run(["ip", "netns", "exec", lab.d, "nft", "delete", "table", "inet", "dcnet"],
                   check=False, capture_output=True)
    inputcache.clear()
    row: dict = {"services": services, "load": [os.getloadavg()[0]]}
    with tempfile.TemporaryDirectory() as state_dir:
        options = {"netns": lab.d, "state_dir": state_dir}
        plan_s, apply_s, changes, tx = sync(options, base)
        row["full"] = plan_s + apply_s
        print(f"{services} x {servers}: full {row['full']:.2f}s (plan {plan_s:.2f}, apply "
              f"{apply_s:.2f}), {changes} objects, {tx} transaction(s)", flush=True)
        noop, noop_tx = [], 0
        for _ in range(5):
            plan_s, apply_s, changes, tx = sync(options, base)
            noop.append(plan_s + apply_s)
            noop_tx += tx + changes
        row["noop"], row["noop_writes"] = statistics.median(noop), noop_tx
        one, one_tx, one_plan = [], [], []
        for i in range(updates):
            plan_s, apply_s, changes, tx = sync(options, changed if i % 2 == 0 else base)
            one.append(plan_s + apply_s)
            one_plan.append(plan_s)
            one_tx.append((changes, tx))
        row["one"], row["one_p99"] = statistics.median(one), pct(one, 0.99)
        row["one_plan"] = statistics.median(one_plan)
        # one service added, then removed again (kube-proxy's anchor: 141 ms at 10k)
        newcomer = model_for(services + 1, servers).services[services]
        added = dataclasses.replace(base, services=(*base.services, newcomer))
        adds, add_tx = [], []
        for i in range(updates):
            plan_s, apply_s, changes, tx = sync(options, added if i % 2 == 0 else base)
            adds.append(plan_s + apply_s)
            add_tx.append((changes, tx))
        row["add"], row["add_p99"] = statistics.median(adds), pct(adds, 0.99)
        row["add_writes"] = sorted(set(add_tx))
        if profile:
            profiled(options, changed if updates % 2 == 0 else base, profile)
        row["one_writes"] = sorted(set(one_tx))
        fresh = []
        for i in range(3):
            m = (model_for(services, servers, i % 2 == 0, extra=vip_service))
            plan_s, apply_s, changes, tx = sync(options, m)
            fresh.append(plan_s + apply_s)
        row["fresh"] = statistics.median(fresh)
        if probe:
            row["probe"] = commit_probe(lab.d, probe)
            for label, took in row["probe"].items():
                print(f"  commit {label}: {took * 1e3:.1f} ms", flush=True)
        lat = connect_times(lab, connects)
        row["lat"], row["lat_p99"] = statistics.median(lat), pct(lat, 0.99)
    row["load"].append(os.getloadavg()[0])
    print(f"  no-op median {row['noop']:.3f}s ({row['noop'] / row['full']:.1%} of full, "
          f"{row['noop_writes']} writes); one service: median {row['one']:.3f}s (plan "
          f"{row['one_plan']:.3f}s), p99 "
          f"{row['one_p99']:.3f}s over {updates} (changes, transactions) "
          f"{row['one_writes']}; one service added/removed: median {row['add']:.3f}s, p99 "
          f"{row['add_p99']:.3f}s {row['add_writes']}; fresh model {row['fresh']:.3f}s; "
          "connect median "
          f"{row['lat'] * 1e6:.0f} us, p99 {row['lat_p99'] * 1e6:.0f} us over {connects}; "
          f"load {row['load'][0]:.1f} -> {row['load'][1]:.1f}", flush=True)
    return row


def bench_maglev() -> None:
    from dcnet.nft import maglev

    names = {f"be-{i}": 1 for i in range(1000)}
    size = maglev.table_size(len(names))
    took = []
    for _ in range(5):
        started = time.perf_counter()
        table = maglev.build(names, size)
        took.append(time.perf_counter() - started)
    loads = maglev.loads(table, len(names))
    print(f"maglev: 1000 backends, M={size}: build median {statistics.median(took) * 1000:.0f}"
          f" ms, max/mean load {max(loads) / (size / len(names)):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, nargs="+", default=[1000, 10000, 30000])
    parser.add_argument("--servers", type=int, default=10)
    parser.add_argument("--updates", type=int, default=24)
    parser.add_argument("--connects", type=int, default=200)
    parser.add_argument("--no-maglev", action="store_true")
    parser.add_argument("--weights", choices=("ramp", "equal"), default="ramp",
                        help="ramp: server j of a service weighs j + 1 (W 55 at 10 servers: "
                        "55 slots per flat VIP:port); equal: every server 1 (W 10)")
    parser.add_argument("--profile", type=int, default=0, metavar="TOP",
                        help="cProfile one more one-service update per size, print TOP "
                        "functions")
    parser.add_argument("--commit-probe", type=int, default=0, metavar="N",
                        help="per size, the kernel's commit time of small batches by kind "
                        "(median of N; see commit_probe)")
    args = parser.parse_args()
    global WEIGHTS
    WEIGHTS = args.weights
    if os.geteuid() != 0:
        raise SystemExit("run as root (creates network namespaces)")
    subprocess.run(["nft", "--version"], check=True)
    rows = []
    with est.Lab(f"nfta{os.getpid() % 10000}", 1) as lab:
        for services in args.services:
            rows.append(bench_size(lab, services, args.servers, args.updates, args.connects,
                                   args.profile, args.commit_probe))
    print("\n| services | full | no-op (of full) | one service median / p99 | one added or "
          "removed median / p99 | fresh model | connect median / p99 | load |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['services']:,} | {r['full']:.2f} s | {r['noop']:.3f} s "
              f"({r['noop'] / r['full']:.1%}) | {r['one'] * 1e3:.0f} / {r['one_p99'] * 1e3:.0f}"
              f" ms | {r['add'] * 1e3:.0f} / {r['add_p99'] * 1e3:.0f} ms"
              f" | {r['fresh'] * 1e3:.0f} ms | {r['lat'] * 1e6:.0f} / "
              f"{r['lat_p99'] * 1e6:.0f} us | {r['load'][0]:.1f}-{r['load'][1]:.1f} |")
    first = rows[0]
    for r in rows[1:]:
        print(f"ratios {r['services']:,} / {first['services']:,}: full "
              f"{r['full'] / first['full']:.2f}x, one-service median "
              f"{r['one'] / first['one']:.2f}x, connect median {r['lat'] / first['lat']:.3f}x"
              f", connect p99 {r['lat_p99'] / first['lat_p99']:.3f}x")
    if not args.no_maglev:
        bench_maglev()


if __name__ == "__main__":
    main()
