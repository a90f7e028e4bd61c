"""The nft target on this kernel, in namespaces: traffic through a VIP and the contract.

Traffic lab (:mod:`dcnet.lab.lvs_lab`'s topology): a director namespace holding the unicom
VIP (on ``lo``; the nft target does not manage addresses), three real servers answering
HTTP (busybox httpd, the body names the server) whose default route is the director (NAT
replies come back through it), and a client behind the unicom gateway: Maglev, and what
carrier routing writes and repairs. Weights, drain, persistence, the carrier return path
and the no-op apply are the conformance suite's (tests/conformance.py, run here by
tests/netns/test_conformance_nft.py, against LVS in the kernel lab). Contract tests
(fresh instance, stale plan, change guard, failed transaction, concurrent ``elbctl
apply``) need only a director namespace.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys

import pytest

from dcnet.lab import lvs_lab as lvslab
from dcnet.model import pieces as model_pieces
from dcnet.nft import synth
from dcnet.nft.nftio import Nft
from dcnet.target import StalePlan, TooMuchChange, apply_plan, make_plan, registry, session
from tests.netns import nft_lab

pytestmark = pytest.mark.netns

VIP = lvslab.VIPS["unicom"][0]          # 198.51.100.74, routed by the unicom gateway
CLIENT = "cli-unicom"
RS = dict(zip(lvslab.SERVERS, ("rs1", "rs2", "rs3"), strict=True))
URL = f"http://{VIP}/id"


def model(servers: dict[str, int], **kw):
    return synth.model(synth.lab_model_text(VIP, servers, target_port=lvslab.RS_HTTP, **kw))


@pytest.fixture
def traffic_lab(lab_factory, tmp_path):
    built = nft_lab.traffic_lab(lab_factory, tmp_path, VIP)
    return built.lab, built.options


@pytest.fixture
def director(lab_factory, tmp_path):
    lab = lab_factory({"hosts": [{"name": "director"}]})
    return lab, {"netns": lab.netns("director"), "state_dir": str(tmp_path / "state")}


def apply(options, m, **kw):
    outcome = session.run("nft", m, options, apply=True, **kw)
    assert outcome.ok, outcome.result.to_text()
    return outcome


def hits(lab, count: int) -> collections.Counter:
    out = lab.run(CLIENT, lvslab.curl_loop(URL, count), timeout=120).stdout
    answers = lvslab.parse_curl(out)
    assert len(answers) == count
    return collections.Counter(body if code == "200" else f"failed {code}"
                               for code, body in answers)


# ------------------------------------------------------------------ traffic


def test_maglev_spreads_flows_and_source_hashing_pins_a_client(traffic_lab):
    lab, options = traffic_lab
    apply(options, model(dict.fromkeys(lvslab.SERVERS, 1), scheduler="mh"))
    assert set(hits(lab, 60)) == set(RS.values())
    table = Nft(options["netns"]).list_json("table", "inet", "dcnet", terse=True)
    assert '"name": "mh-tcp-198.51.100.74-80-' in table
    apply(options, model(dict.fromkeys(lvslab.SERVERS, 1), scheduler="sh"), force=True)
    assert len(hits(lab, 20)) == 1


def test_carrier_routing_returns_replies_by_the_carrier_they_came_in_on(traffic_lab):
    """lvs.lab's model: one NAT service with a telecom and a unicom VIP. The director's
    main default route is unicom's, and unicom's gateway cannot reach telecom clients:
    only carrier routing brings telecom replies back. (Which gateway the replies of each
    carrier reach, with routing, is the conformance suite's check, tests/conformance.py.)"""
    lab, options = traffic_lab
    telecom_vip = lvslab.VIPS["telecom"][0]
    lab.run("director", ["ip", "addr", "add", f"{telecom_vip}/32", "dev", "lo"])
    telecom_url = f"http://{telecom_vip}/id"

    def answers(url: str, client: str, count: int) -> list[str]:
        out = lab.run(client, lvslab.curl_loop(url, count, timeout=2), timeout=120).stdout
        return [code for code, _body in lvslab.parse_curl(out)]

    apply(options, lvslab.model())
    assert answers(telecom_url, "cli-telecom", 2) == ["000", "000"]    # lost via unicom
    routed = {**options, "carrier_routing": True}
    first = apply(routed, lvslab.model(), force=True)
    assert first.result.writes["rtnetlink"] == 4              # 2 fwmark rules, 2 routes
    assert answers(telecom_url, "cli-telecom", 5) == ["200"] * 5
    rules = lab.run("director", ["ip", "rule", "show"]).stdout
    assert "fwmark 0x65 lookup 101" in rules and "fwmark 0x66 lookup 102" in rules
    again = apply(routed, lvslab.model())
    assert again.plan.empty and not any(again.result.writes.values()), again.plan.to_text()
    assert again.plan.payload.fast_path
    # routing is read on every plan, the fast path too; repairing it keeps the record
    lab.run("director", ["ip", "route", "del", "default", "table", "101"])
    repair = apply(routed, lvslab.model())
    assert repair.plan.payload.fast_path
    assert [c.describe() for c in repair.plan.changes] == [
        "+ route 101 0.0.0.0/0 (dev=ctc0, gateway=198.51.100.1)"]
    assert apply(routed, lvslab.model()).plan.payload.fast_path
    # turning it off on the fast path takes the marks and the replies chain away, and a
    # full read then agrees (the routes and rules stay: without the option they are not
    # the nft target's business)
    off = apply(options, lvslab.model(), force=True)
    assert off.plan.payload.fast_path
    assert ("hook", ("replies",)) in {(c.kind, c.key) for c in off.plan.changes}
    target = registry.create("nft", **options)
    os.unlink(target.fingerprint_path())
    assert target.plan(lvslab.model()).empty


# ------------------------------------------------------------------ contract


def services(n: int, backends: int = 3, weight: int = 1):
    return synth.model(synth.model_text(n, backends, weight=weight))


def test_a_fresh_instance_applies_a_plan_made_by_another(director):
    _lab, options = director
    plan = registry.create("nft", **options).plan(services(2))
    fresh = registry.create("nft", **options)
    result = apply_plan(fresh, plan)
    assert result.ok and result.writes["nft_transactions"] == 1
    assert registry.create("nft", **options).plan(services(2)).empty


def test_a_stale_plan_is_refused_and_changes_nothing(director):
    _lab, options = director
    apply(options, services(2))
    plan = registry.create("nft", **options).plan(services(3))
    apply(options, services(2, backends=2))            # someone else changed the table
    nft = Nft(options["netns"])
    before = nft.raw_listing()
    with pytest.raises(StalePlan):
        apply_plan(registry.create("nft", **options), plan)
    assert nft.raw_listing() == before


def test_the_change_guard_refuses_a_big_delete_without_force(director):
    _lab, options = director
    apply(options, services(12))      # the table's own objects are ~85 (flat sets)
    with pytest.raises(TooMuchChange):
        session.run("nft", services(0), options, apply=True)
    assert not registry.create("nft", **options).plan(services(12)).changes
    apply(options, services(0), force=True)
    assert registry.create("nft", **options).plan(services(0)).empty


def test_a_refused_transaction_applies_nothing_and_says_so(director):
    lab, options = director
    sticky = lambda n: synth.model(synth.model_text(1, n, persistence=60))  # noqa: E731
    apply(options, sticky(2))                  # persistence: the chain layout
    nft = Nft(options["netns"])
    target = registry.create("nft", **options)
    with target.lock():
        plan = make_plan(target, sticky(1))                   # deletes one backend chain
        doomed = [c for c in plan.changes if c.kind == "backend" and c.action == "delete"]
        assert len(doomed) == 1
        chain = "be-" + "-".join(str(p) for p in doomed[0].key)
        # a rule outside dcnet's plan now jumps to that chain: its delete must fail
        lab.run("director", ["nft", "add", "rule", "inet", "dcnet", "output", "jump", chain])
        before = nft.raw_listing()
        result = apply_plan(target, plan)
    assert not result.ok and result.applied == [] and result.undone == []
    assert "nothing of it applied" in str(result.error)
    assert len(result.more_failures) == len(plan.changes) - 1
    assert nft.raw_listing() == before


def test_concurrent_elbctl_applies_leave_exactly_one_model(director, tmp_path):
    _lab, options = director
    elbctl = os.path.join(os.path.dirname(sys.executable), "elbctl")
    files = []
    for i in range(4):
        path = tmp_path / f"model{i}.yaml"
        path.write_text(synth.model_text(3 + i, 3, weight=i + 1))
        files.append(str(path))
    flags = ["--target", "nft", "--nft-netns", options["netns"], "--nft-state-dir",
             options["state_dir"], "--force"]
    for _round in range(5):
        procs = [subprocess.Popen([elbctl, "apply", "-f", f, *flags], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for f in files]
        outputs = [p.communicate(timeout=300)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs), outputs
        empty = [f for f in files if subprocess.run(
            [elbctl, "plan", "-f", f, "--detailed-exitcode", *flags[:-1]],
            capture_output=True, text=True).returncode == 0]
        assert len(empty) == 1, empty


def test_a_registry_drain_stops_new_flows_to_that_server_only(director, tmp_path):
    """``elbctl backend drain`` state (the LVS registry) merged by --nft-registry-dir."""
    from dcnet.lvs.store import Store

    lab, options = director
    m = services(1, backends=3)
    apply(options, m)
    registry_dir = str(tmp_path / "lvs")
    Store(registry_dir).save_registry({synth.job(0): {"10.64.0.1": {"state": "draining",
                                                                    "weight": 1}}})
    drained = apply({**options, "registry_dir": registry_dir}, m)
    assert [c.describe().split(" (")[0] for c in drained.plan.changes] == [
        "~ flat tcp 10.128.0.1 80"]
    slots = lab.run("director", ["nft", "list", "map", "inet", "dcnet", "wr4"]).stdout
    mine = [line for line in slots.replace(",", "\n").splitlines() if "10.128.0.1 . tcp" in line]
    assert len(mine) == 2, slots                                    # W 3 -> 2
    assert not any("10.64.0.1 . 8080" in line for line in mine)
    assert any("10.64.0.2 . 8080" in line for line in mine)
    assert registry.create("nft", **options).plan(m).changes      # without it: undrained
    pieces = model_pieces.Pieces(model_pieces.pack(m, 1))          # so says a drift check
    assert not session.drifted("nft", pieces, {**options, "registry_dir": registry_dir})
    assert session.drifted("nft", pieces, options)


def test_incremental_sync_reads_no_listing_and_matches_a_full_read(director):
    lab, options = director
    apply(options, services(20))
    target = registry.create("nft", **options)

    def no_listing():
        raise AssertionError("the fast path listed the table")

    target.nft.raw_listing = no_listing
    noop = target.plan(services(20))
    assert noop.payload.fast_path and noop.empty
    one = synth.model(synth.model_text(20, 3, changed=7))     # one service re-weighted
    with target.lock():
        plan = make_plan(target, one)
        assert plan.payload.fast_path
        assert {c.key[:3] for c in plan.changes} == {("tcp", "10.128.0.8", 80)}
        assert apply_plan(target, plan).ok
    assert target.plan(one).empty                     # fast path again, after our commit
    # a full read (no record) agrees with what the fast path left
    full = registry.create("nft", **options)
    os.unlink(full.fingerprint_path())
    check = full.plan(one)
    assert not check.payload.fast_path and check.empty, check.to_text()
    # any other commit in the namespace moves the generation: the full read repairs drift
    apply(options, one)                                # records again
    lab.run("director", ["nft", "delete", "element", "inet", "dcnet", "wrp4",  # weights
                         "{ 10.128.0.8 . tcp . 80 . 0xc0000000 }"])             # 2, 1, 1
    drift = registry.create("nft", **options).plan(one)
    assert not drift.payload.fast_path
    assert [c.describe().split(" (")[0] for c in drift.changes] == [
        "~ flat tcp 10.128.0.8 80"]
