"""Maglev lookup tables (dcnet.nft.maglev): prime sizes, determinism, balance, weights,
and minimal disruption when one backend leaves."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from dcnet.nft import maglev, ruleset, synth
from tests.unit import maglev_reference

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def backends(n: int) -> dict[str, int]:
    """``n`` servers named as the nft target names them (by address)."""
    return {f"10.64.{i // 250}.{i % 250}": 1 for i in range(n)}


def test_table_size_is_prime_and_above_100_slots_per_backend():
    assert maglev.table_size(3) == 65537
    assert maglev.table_size(655) == 65537
    size = maglev.table_size(1000)
    assert size > 100 * 1000 and maglev.is_prime(size)
    assert not maglev.is_prime(65536) and maglev.is_prime(65537)
    with pytest.raises(ValueError):
        maglev.build({"a": 1}, 65536)


def test_two_directors_build_byte_identical_tables_whatever_the_input_order():
    names = backends(50)
    reordered = dict(reversed(list(names.items())))
    a, b = maglev.build(names), maglev.build(reordered)
    assert maglev.table_bytes(a) == maglev.table_bytes(b)
    assert len(a) == 65537 and set(a) == set(range(50))


@pytest.mark.parametrize("count", [3, 100, 1000])
def test_balance_max_over_mean_at_most_1_01(count):
    size = maglev.table_size(count)
    loads = maglev.loads(maglev.build(backends(count), size), count)
    mean = size / count
    assert max(loads) / mean <= 1.01, (max(loads), mean)
    assert min(loads) / mean >= 0.99


def test_weights_set_the_shares_and_weight_zero_takes_no_slot():
    table = maglev.build({"a": 3, "b": 2, "c": 1, "drained": 0})
    assert maglev.names_of({"a": 3, "b": 2, "c": 1, "drained": 0}) == ["a", "b", "c"]
    loads = maglev.loads(table, 3)
    assert [round(x / len(table), 3) for x in loads] == [0.5, 0.333, 0.167]
    assert maglev.build({"a": 0}) == ()


@pytest.mark.parametrize("count", [10, 100])
def test_removing_one_backend_moves_its_share_and_little_else(count):
    """Maglev is not perfectly minimal (paper, figure 12): removing one of N backends
    moves its 1/N plus a small share of other slots; measured here: at most 2/N."""
    names = backends(count)
    gone = sorted(names)[count // 2]
    after = {n: w for n, w in names.items() if n != gone}
    old, new = maglev.build(names), maglev.build(after)
    before_names, after_names = maglev.names_of(names), maglev.names_of(after)
    own = maglev.loads(old, count)[before_names.index(gone)] / len(old)
    moved = maglev.moved_share(before_names, old, after_names, new)
    assert moved >= own                       # every slot of the removed backend moved
    assert moved <= 2.0 / count, (moved, own)
    # and every slot that did not point to the removed backend mostly stays put
    kept = sum(1 for a, b in zip(old, new, strict=True)
               if before_names[a] != gone and before_names[a] == after_names[b])
    assert kept / (len(old) - own * len(old)) >= 1 - 1.0 / count


def random_weights(rng: random.Random, count: int) -> dict[str, int]:
    pick = rng.choice(["equal", "unequal", "drained"])
    weights = {}
    for i in range(count):
        name = f"10.{rng.randrange(256)}.{i // 250}.{i % 250}"
        if pick == "equal":
            weights[name] = 1
        else:
            weights[name] = rng.choice([0, 1, 1, 2, 3, 7, 100] if pick == "drained"
                                       else [1, 2, 3, 5, 64])
    return weights


CASES = [(7, 1), (7, 3), (13, 64), (101, 5), (211, 70), (1009, 200), (1009, 1000),
         (4099, 64), (65537, 1), (65537, 10), (65537, 100), (100003, 1000)]


@pytest.mark.parametrize("size,count", CASES)
def test_the_bulk_build_is_byte_identical_to_the_sequential_reference(size, count):
    """The table is a contract (two directors, tables already loaded): the bulk build
    (numpy rounds, rank-ordered tail) must give the sequential algorithm's table, for
    equal, unequal and zero weights, a table smaller than the backend count included."""
    rng = random.Random(size * 7919 + count)
    for _ in range(2 if size > 10000 else 4):
        weights = random_weights(rng, count)
        if not any(weights.values()):
            continue
        want = maglev_reference.build(weights, size)
        assert maglev.table_bytes(maglev.build(weights, size)) == maglev.table_bytes(want)


@pytest.mark.parametrize("tail,bulk_from,few,top,near", [
    (0, 1, 0, 16, 16), (1, 1, 10**9, 16, 0), (5, 2, 3, 1, 2), (300, 1, 0, 1, 16),
    (300, 1, 40, 2, 128), (0, 10**9, 0, 16, 16), (3, 10**9, 0, 16, 16),
    (5000, 10**9, 0, 1, 16)])
def test_every_switch_point_between_the_ways_gives_the_same_table(monkeypatch, tail,
                                                                   bulk_from, few, top,
                                                                   near):
    """Where the build turns from rounds to ranks (TAIL), which backend counts go by
    numpy rounds (BULK_FROM), how many same-slot claims are settled in Python (FEW), how
    many ranks the tail sorts per backend before all of them (_TOP) and how many steps
    a walk adds row by row (_NEAR) must not change a slot."""
    monkeypatch.setattr(maglev, "TAIL", tail)
    monkeypatch.setattr(maglev, "BULK_FROM", bulk_from)
    monkeypatch.setattr(maglev, "FEW", few)
    monkeypatch.setattr(maglev, "_TOP", top)
    monkeypatch.setattr(maglev, "_NEAR", near)
    rng = random.Random(tail * 31 + bulk_from + few + top)
    for _ in range(6):
        size = rng.choice([2, 7, 13, 101, 1009, 4099])
        weights = random_weights(rng, rng.choice([1, 2, 3, 10, 65, 300]))
        if any(weights.values()):
            assert maglev.build(weights, size) == maglev_reference.build(weights, size)


def test_a_small_build_does_not_import_numpy():
    """Under BULK_FROM backends the build is sequential and ranks its tail in Python:
    an elbctl process with small services does not pay numpy's import."""
    code = ("import sys; from dcnet.nft import maglev; "
            "maglev.build({f'10.0.0.{i}': 1 + i % 3 for i in range(40)}); "
            "assert 'numpy' not in sys.modules, 'numpy imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_server_ids_are_the_address_ranked_by_port_whatever_the_order():
    assert maglev.server_ids([("10.0.0.2", 8080), ("10.0.0.1", 8080)]) == \
        ["10.0.0.2", "10.0.0.1"]
    assert maglev.server_ids([("10.0.0.1", 53), ("10.0.0.2", 53)]) == \
        ["10.0.0.1", "10.0.0.2"]                       # the port does not count
    assert maglev.server_ids([("fd00:0::11", 80)]) == ["fd00::11"]      # canonical form
    # one host, several ports: ranked by port, so any order names them alike
    assert maglev.server_ids([("10.0.0.1", 9001), ("10.0.0.1", 9000), ("10.0.0.2", 1)]) == \
        ["10.0.0.1#1", "10.0.0.1", "10.0.0.2"]


VIP = "198.51.100.10"


def two_port_model(servers: dict[str, int], scheduler: str):
    """One VIP, TCP :80 -> :8080 and UDP :53 -> :53, on the same real servers."""
    rs = "".join(f"      - {{address: '{a}', weight: {w}}}\n" for a, w in servers.items())
    return synth.model("version: 1\n" + synth.CARRIER % "198.51.100.0/26" + "services:\n"
                       f"  - job: {synth.job(0)}\n    vips: {{telecom: '{VIP}'}}\n"
                       f"    ports:\n"
                       f"      - {{port: 80, protocol: tcp, scheduler: {scheduler}, "
                       "forward: nat, target_port: 8080}\n"
                       f"      - {{port: 53, protocol: udp, scheduler: {scheduler}, "
                       "forward: nat, target_port: 53}\n"
                       f"    real_servers:\n{rs}")


def slot_servers(want, proto: str, port: int) -> list[str]:
    """slot -> real server address of the service's Maglev map (its nft elements)."""
    (key4,) = [k for kind, k in want.state
               if kind == "maglev" and (str(k[0]), k[2]) == (proto, port)]
    slots = {}
    for line in want.bodies[("maglev", key4)]:
        for elem in line.split("{ ", 1)[1].rstrip(" }").split(", "):
            slot, chain = elem.split(" : goto ")
            kind, key = ruleset.parse_name(chain)
            assert kind == "backend" and key[:3] == key4[:3]
            slots[int(slot)] = key[3]
    return [slots[i] for i in range(len(slots))]


@pytest.mark.parametrize("scheduler", ["sh", "mh"])
def test_services_with_the_same_servers_send_a_flow_hash_to_the_same_server(scheduler):
    """IPVS sh picks one server for a client across services with the same destinations:
    the TCP and the UDP service here (other protocol, port and real port) map every slot,
    i.e. every flow hash, to the same real server; and a second director, given the
    servers in another order, builds byte-identical maps."""
    servers = {"10.20.0.11": 3, "10.20.0.12": 2, "10.20.0.13": 1, "10.20.0.14": 1}
    want = ruleset.desired(two_port_model(servers, scheduler))
    tcp, udp = slot_servers(want, "tcp", 80), slot_servers(want, "udp", 53)
    assert len(tcp) == 65537 and set(tcp) == set(servers)
    assert tcp == udp
    other = ruleset.desired(two_port_model(dict(reversed(servers.items())), scheduler))
    assert other.bodies == want.bodies and other.state == want.state
    # the table still follows the weights (3:2:1:1 of 7)
    assert round(tcp.count("10.20.0.11") / len(tcp), 3) == round(3 / 7, 3)
    # and a service with other weights builds another table
    reweighted = ruleset.desired(two_port_model({**servers, "10.20.0.11": 1}, scheduler))
    assert slot_servers(reweighted, "tcp", 80) != tcp


def test_the_seed_rule_is_part_of_a_maglev_services_input_digest(monkeypatch):
    """An apply record made with other seeds (chain names) must not let the fast path
    keep the old tables: the seed rule is in the input digest of Maglev services only."""
    def digests(scheduler):
        found, _ = ruleset.inputs(two_port_model({"10.20.0.11": 1}, scheduler))
        return [s.digest() for _k, s in sorted(found.items())]

    sh, wrr = digests("sh"), digests("wrr")
    monkeypatch.setattr(maglev, "SEEDS", "chain-name")
    assert all(a != b for a, b in zip(sh, digests("sh"), strict=True))
    assert digests("wrr") == wrr
