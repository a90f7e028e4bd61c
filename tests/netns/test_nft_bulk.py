"""dcnet.nft.bulk on this kernel: a big sync as one raw netlink batch leaves exactly the
table ``nft -f`` leaves (every set, chain, rule and element, compared listing to
listing), answers traffic through a VIP, reads back as planned (a second apply writes
nothing), and a batch the kernel refuses applies nothing."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from dcnet.lab import lvs_lab as lvslab
from dcnet.nft import bulk, fastpath, script, synth
from dcnet.nft.nftio import Nft
from dcnet.sysio import netns as netns_mod
from dcnet.target import apply_plan, make_plan, registry
from tests.netns import nft_lab

pytestmark = pytest.mark.netns

VIP = lvslab.VIPS["unicom"][0]
CLIENT = "cli-unicom"
V6 = "2001:db8:75::10"


def big_model(services: int, servers: int, vip: str = VIP, real: dict | None = None,
              chained: bool = False):
    """``vip`` on ``real`` (or ``servers`` made-up servers), plus ``services`` more VIPs
    of ``servers`` made-up servers, weights 1 .. 3 (W differs), and one IPv6 VIP;
    ``chained``: the second VIP's port is Maglev (``mh``) and the third's persistent."""
    made_up = {f"10.78.{j // 250}.{j % 250 + 1}": j % 3 + 1 for j in range(servers)}
    more = tuple((f"10.77.{i // 250}.{i % 250 + 1}",
                  {f"10.79.{(i * servers + j) // 250 % 250}.{(i * servers + j) % 250 + 1}":
                   (i + j) % 3 + 1 for j in range(servers)})
                 for i in range(services))
    more += ((V6, {"fd00:75::11": 2, "fd00:75::12": 1}),)
    text = synth.lab_model_text(vip, real or made_up, target_port=lvslab.RS_HTTP, more=more)
    if chained:
        parts = text.split("  - job: ")
        parts[2] = parts[2].replace("scheduler: wrr", "scheduler: mh")
        parts[3] = parts[3].replace("persistence: 0", "persistence: 300")
        text = "  - job: ".join(parts)
    return synth.model(text)


def planned_and_applied(options, m, *, bulk_ok: bool):
    """Plan and apply ``m`` from an empty table: by one raw batch (``bulk_ok``; nft -f
    forbidden) or by nft -f (bulk forbidden). The plan."""
    target = registry.create("nft", **options)
    if bulk_ok:
        def no_nft(*_a, **_k):
            raise AssertionError("nft -f ran for a bulk plan")
        target.nft.run_script = no_nft
    with target.lock():
        plan = make_plan(target, m)
        assert bulk.eligible(list(plan.changes), plan.objects) is True or not bulk_ok
        if not bulk_ok:
            target.apply_batch = _without_bulk(target)
        result = apply_plan(target, plan)
    assert result.ok and result.writes["nft_transactions"] == 1, result.to_text()
    return plan


def _without_bulk(target):
    original = target.apply_batch

    def apply_batch(changes, plan):
        saved = bulk.eligible
        bulk.eligible = lambda *_a: False
        try:
            return original(changes, plan)
        finally:
            bulk.eligible = saved
    return apply_batch


def listing(netns: str) -> list:
    """The whole table (elements included), without handles, elements sorted."""
    out = subprocess.run(netns_mod.exec_argv(netns, ["nft", "-j", "list", "table", "inet",
                                                     "dcnet"]),
                         capture_output=True, text=True, check=True).stdout
    items = []
    for item in json.loads(out)["nftables"]:
        for body in item.values():
            if isinstance(body, dict):
                body.pop("handle", None)
                if isinstance(body.get("elem"), list):
                    body["elem"] = sorted(body["elem"], key=json.dumps)
        items.append(item)
    return sorted(items, key=json.dumps)


def maglev_sizes(items: list) -> list[int]:
    """How many elements each Maglev map of a :func:`listing` holds."""
    return [len(b["elem"]) for i in items for b in i.values() if isinstance(b, dict)
            and str(b.get("name", "")).startswith("mh-")]


def test_a_bulk_batch_leaves_the_table_nft_f_leaves(lab_factory, tmp_path):
    lab = lab_factory({"hosts": [{"name": "one"}, {"name": "two"}]})
    m = big_model(1000, 10)
    options = [{"netns": lab.netns(h), "state_dir": str(tmp_path / h)} for h in ("one", "two")]
    plan = planned_and_applied(options[0], m, bulk_ok=True)
    assert sum(1 for c in plan.changes if c.kind == "flat") == 1002
    planned_and_applied(options[1], m, bulk_ok=False)
    raw, text = listing(options[0]["netns"]), listing(options[1]["netns"])
    elements = sum(len(b.get("elem", ())) for i in raw for b in i.values()
                   if isinstance(b, dict))
    assert elements > 15000 and len(raw) > 1000 and raw == text
    target = registry.create("nft", **options[0])                  # the record agrees
    assert target.plan(m).empty
    target = registry.create("nft", **options[0])
    os.unlink(target.fingerprint_path())
    check = target.plan(m)                                         # and the kernel does
    assert not check.payload.fast_path and check.empty, check.to_text()[:2000]


def test_chained_vip_ports_go_in_the_same_batch(lab_factory, tmp_path):
    lab = lab_factory({"hosts": [{"name": "one"}, {"name": "two"}]})
    m = big_model(1000, 10, chained=True)
    options = [{"netns": lab.netns(h), "state_dir": str(tmp_path / h)} for h in ("one", "two")]
    plan = planned_and_applied(options[0], m, bulk_ok=True)
    kinds = {c.kind for c in plan.changes}
    assert {"maglev", "affinity", "service", "backend", "element"} <= kinds
    planned_and_applied(options[1], m, bulk_ok=False)
    raw, text = listing(options[0]["netns"]), listing(options[1]["netns"])
    maglev = [maglev_sizes(got) for got in (raw, text)]
    if maglev != [[65537], [65537]]:    # its table, replayed (and listed): or is it the listing?
        again = [maglev_sizes(listing(o["netns"])) for o in options]
        raise AssertionError(f"Maglev map elements listed: {maglev}, listed again: {again}")
    assert raw == text
    target = registry.create("nft", **options[0])
    os.unlink(target.fingerprint_path())
    check = target.plan(m)
    assert not check.payload.fast_path and check.empty, check.to_text()[:2000]


def test_traffic_goes_through_a_bulk_table(lab_factory, tmp_path, monkeypatch):
    built = nft_lab.traffic_lab(lab_factory, tmp_path, VIP)
    lab, options = built.lab, built.options
    monkeypatch.setattr(fastpath, "MAX_ELEMENTS", 100)            # 20 VIPs are "big"
    real = dict.fromkeys(lvslab.SERVERS, 1)
    planned_and_applied(options, big_model(20, 3, real=real), bulk_ok=True)
    out = lab.run(CLIENT, lvslab.curl_loop(f"http://{VIP}/id", 12), timeout=120).stdout
    answers = lvslab.parse_curl(out)
    assert len(answers) == 12 and all(code == "200" for code, _ in answers), answers
    assert len({body for _code, body in answers}) == 3             # every server answers


def test_a_refused_bulk_batch_applies_nothing(lab_factory, tmp_path, monkeypatch):
    lab = lab_factory({"hosts": [{"name": "director"}]})
    options = {"netns": lab.netns("director"), "state_dir": str(tmp_path / "state")}
    monkeypatch.setattr(fastpath, "MAX_ELEMENTS", 100)
    real = bulk.element_messages

    def one_bad(changes):          # the last message adds to a set nobody created
        msgs = real(changes)
        return [*msgs, bulk._flush({"no-such-set": [bulk._element(b"\0" * 12, None)]})[0]]

    monkeypatch.setattr(bulk, "element_messages", one_bad)
    target = registry.create("nft", **options)
    with target.lock():
        plan = make_plan(target, big_model(20, 3))
        assert bulk.eligible(list(plan.changes), plan.objects)
        result = apply_plan(target, plan)
    assert not result.ok and "nothing of it applied" in result.to_text()
    assert Nft(options["netns"]).list_json("table", "inet", "dcnet") is None


def test_a_table_with_an_anonymous_set_is_not_replayed():
    text = ("add table inet dcnet\nadd chain inet dcnet c\n"
            "add rule inet dcnet c ct mark { 1, 2 } accept\n")
    with pytest.raises(bulk.NotBulk):
        netns_mod.run_in_new(bulk._compile_here, text)


def test_a_set_rehashed_while_dumped_is_dumped_again(monkeypatch):
    """The kernel resumes a set's element dump by count: a hash set rehashed between two
    parts (its worker growing a just-filled set, late on a busy machine) is walked in
    another order, and the dump repeats some elements and leaves as many out (once, 50,365
    of a Maglev map's 65,537 slots listed). Here the set is grown and shrunk back to
    what it was (twice as many more added, then deleted) after the first dump's
    tenth part: that dump is made again, and every element comes back, once."""
    size = 20011

    def elements(verb: str, first: int, last: int, data: bool) -> str:
        return "".join(f"{verb} element inet dcnet mh-x {{ " + ", ".join(
            f"{i} : goto b{i % 3}" if data else str(i) for i in range(lo, min(last, lo + 4096)))
            + " }\n" for lo in range(first, last, 4096))

    text = ("add table inet dcnet\n" + "".join(f"add chain inet dcnet b{i}\n" for i in range(3))
            + "add map inet dcnet mh-x { typeof numgen random mod 2 : verdict; }\n"
            + elements("add", 0, size, True))
    real, dumps = fastpath._dump, []

    def rehashed_once(sock, msg, attrs=None):
        first = msg == 13 and not dumps                 # NFT_MSG_GETSETELEM
        if msg == 13:
            dumps.append(msg)
        for part, payload in enumerate(real(sock, msg, attrs)):
            yield payload
            if first and part == 9:                     # in the private namespace
                for verb, data in (("add", True), ("delete", False)):
                    subprocess.run(["nft", "-f", "-"], input=elements(verb, 10**6,
                                   10**6 + 2 * size, data), text=True, check=True)

    monkeypatch.setattr(fastpath, "_dump", rehashed_once)
    _sets, _chains, _rules, replayed = netns_mod.run_in_new(bulk._compile_here, text)
    keys = [dict(fastpath._attrs(elem[4:]))[1]
            for message in replayed
            for _t, elem in fastpath._attrs(dict(fastpath._attrs(message))[3][4:])]
    assert len(dumps) >= 2 and len(keys) == size and len(set(keys)) == size, (
        len(dumps), len(keys), len(set(keys)))


def test_a_script_in_pieces_commits_whole_or_nothing(lab_factory):
    lab = lab_factory({"hosts": [{"name": "director"}]})
    nft = Nft(lab.netns("director"))

    def pieces(fail: bool):
        yield "add table inet dcnet\n"
        yield "add chain inet dcnet c\n"
        if fail:                   # the rendering fails after nft has read two pieces
            raise script.MissingBody(("service", ("tcp", "192.0.2.1", 80)))
        yield "add chain inet dcnet d\n"

    with pytest.raises(script.MissingBody):
        nft.run_script(pieces(True))
    assert nft.list_json("table", "inet", "dcnet") is None        # nft killed, no commit
    called = []
    nft.run_script(pieces(False), meanwhile=lambda: called.append(True))
    chains = {i["chain"]["name"] for i in json.loads(nft.list_json("table", "inet", "dcnet"))[
        "nftables"] if "chain" in i}
    assert chains == {"c", "d"} and called == [True] and nft.transactions == 1


def test_big_element_only_plans_go_in_plan_order(lab_factory, tmp_path):
    """Re-weighting 1,000 VIP:ports to one weight pattern (updates: each adds the same
    picks again) and then removing them (a counter after the elements that name it) go
    as one raw batch each, and each leaves what a full read plans nothing against."""
    lab = lab_factory({"hosts": [{"name": "director"}]})
    options = {"netns": lab.netns("director"), "state_dir": str(tmp_path / "state")}
    planned_and_applied(options, synth.model(synth.model_text(1000, 10)), bulk_ok=True)
    steps = [synth.model(_uneven_text(1000, 10)),                   # 1,000 to one pattern
             synth.model(synth.model_text(1, 10))]                  # 999 removed
    for m in steps:
        target = registry.create("nft", **options)

        def no_nft(*_a, **_k):
            raise AssertionError("nft -f ran for a big element-only plan")
        target.nft.run_script = no_nft
        with target.lock():
            plan = make_plan(target, m)
            assert bulk.eligible(list(plan.changes), plan.objects)
            result = apply_plan(target, plan, force=True)
        assert result.ok and result.writes["nft_transactions"] == 1, result.to_text()[-2000:]
        check = registry.create("nft", **options)
        os.unlink(check.fingerprint_path())
        full = check.plan(m)
        assert not full.payload.fast_path and full.empty, full.to_text()[:2000]


def _uneven_text(services: int, servers: int) -> str:
    """synth.model_text with server j of each service weighing j % 3 + 1."""
    lines = synth.model_text(services, servers).splitlines(keepends=True)
    out, j = [], 0
    for line in lines:
        if line.startswith("      - {address:"):
            line = line.replace("weight: 1}", f"weight: {j % 3 + 1}}}")
            j += 1
        elif line.startswith("  - job:"):
            j = 0
        out.append(line)
    return "".join(out)
