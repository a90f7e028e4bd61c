"""The LVS target's piecewise drift check (dcnet.lvs.drift) over the fake IPVS and the
fake routing: it answers as the plan does (tests/drift_contract.py's variants, in pieces
of one and two services) on its fast path and its incremental path, sees hand changes
to routing, sysctls and IPVS as the plan does, and falls back to the whole plan only
where the plan reads the whole table; the streamed digests equal the whole ones."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from itertools import chain

import pytest

from dcnet.lvs import drift, fingerprint, incremental, state
from dcnet.lvs.backend import LVSTarget
from dcnet.lvs.fake import FakeIPVS
from dcnet.lvs.fake_routing import FakeRouting
from dcnet.lvs.ipvs import CMD_SET_DEST, Request, WireDest, WireService
from dcnet.model import pieces as model_pieces
from dcnet.target import apply_plan
from tests.drift_contract import variants
from tests.unit.test_lvs_incremental import model_for, vip_of

pytestmark = pytest.mark.unit

NOW = 1_700_000_000.0
N = 5


class Director:
    """A fake director (IPVS, routing, state directory); each target a fresh instance."""

    def __init__(self, directory, drain_seconds: int = 0):
        self.ipvs = FakeIPVS()
        self.routing = FakeRouting(links=("up0", "elb0"),
                                   sysctls=dict.fromkeys(state.SYSCTLS, "0"))
        self.directory = str(directory)
        self.drain_seconds = drain_seconds

    def model(self, *args, **kw):
        model = model_for(*args, **kw)
        return dataclasses.replace(model, lvs=dataclasses.replace(
            model.lvs, drain_seconds=self.drain_seconds))

    def target(self) -> LVSTarget:
        return LVSTarget(state_dir=self.directory, ipvs=self.ipvs, routing=self.routing,
                         clock=lambda: NOW)

    def apply(self, model) -> None:
        target = self.target()
        result = apply_plan(target, target.plan(model))
        assert result.ok, result.to_text()

    def agrees(self, model, per_piece: int = 1, piecewise: bool = True) -> bool:
        """drifted() of ``model`` in pieces equals its whole plan's answer; with
        ``piecewise`` the check answered without falling back to the whole plan."""
        pieces = model_pieces.Pieces(model_pieces.pack(model, per_piece))
        answer = drift.drifted(self.target(), pieces)
        planned = not self.target().plan(model).empty
        assert (answer is not None) == piecewise, answer
        assert self.target().drifted(pieces) == planned
        return planned


@pytest.mark.parametrize("per_piece", [1, 2])
def test_the_contract_variants_in_pieces(tmp_path, per_piece):
    lab = Director(tmp_path)
    applied = lab.model(N)
    lab.apply(applied)
    seen = {name: lab.agrees(variant, per_piece) for name, variant in variants(applied)}
    assert seen == {"as applied": False, **{name: True for name in seen
                                            if name != "as applied"}}


def test_a_changed_model_at_the_drained_server_keeps_its_vip(tmp_path):
    """A service gone whose servers hold connections: the plan drains them (weight 0)
    and keeps the VIP's address and rule; the check says the same."""
    lab = Director(tmp_path, drain_seconds=300)
    applied = lab.model(N)
    lab.apply(applied)
    lab.ipvs.set_conns(WireService(2, 6, vip_of(4), 80), "172.16.0.13", 8080, 3)
    assert lab.agrees(lab.model(N, dropped=4))


@pytest.mark.parametrize("change", ["rule", "address", "link", "route", "sysctl",
                                    "foreign rule", "extra vip"])
def test_routing_changed_by_hand(tmp_path, change):
    lab = Director(tmp_path)
    applied = lab.model(N)
    lab.apply(applied)
    routing = lab.routing
    if change == "rule":
        routing.rules = [r for r in routing.rules if r.get("src") != vip_of(2)]
    elif change == "address":
        del routing.links["elb0"].addresses[vip_of(3)]
    elif change == "link":
        routing.link_down("elb0")
    elif change == "route":
        routing.routes.clear()
    elif change == "sysctl":
        routing.sysctls["net.ipv4.ip_forward"] = "0"
    elif change == "foreign rule":          # in elbctl's range: the plan deletes it
        routing.add_rule(family=2, priority=20005, table=101, fwmark=7)
    else:                                   # a VIP address no service has: deleted
        routing.add_address("elb0", "10.99.0.1", 32)
    # an extra VIP address changes the owned VIPs, which the apply's records hold: the
    # plan reads the whole table, before and once after the repair
    piecewise = change != "extra vip"
    assert lab.agrees(applied, piecewise=piecewise)
    lab.apply(applied)
    assert not lab.agrees(applied, piecewise=piecewise)


def test_ipvs_changed_by_hand_is_the_whole_plan(tmp_path):
    """A weight set behind dcnet's back: the table's digest is not the record's, the
    plan reads it all, and so does the check (it falls back)."""
    lab = Director(tmp_path)
    applied = lab.model(N)
    lab.apply(applied)
    assert lab.ipvs.execute([Request(CMD_SET_DEST, WireService(2, 6, vip_of(1), 80),
                                     WireDest(2, "172.16.0.4", 8080, fwd=0, weight=9))]) == [0]
    assert lab.agrees(applied, piecewise=False)
    lab.apply(applied)
    assert not lab.agrees(applied)


def test_a_full_read_due_is_made_once_and_recorded(tmp_path):
    """After an incremental apply, a full read is due FULL_READ_AGE later: the check
    plans the whole model once and, finding the director at the model, records it as an
    apply of that empty plan would; the next check is piecewise again."""
    lab = Director(tmp_path)
    lab.apply(lab.model(N))
    changed = lab.model(N, dropped=4)
    lab.apply(changed)                                   # incremental: applies 1
    assert incremental.load(lab.target()._record_path()).applies == 1
    later = NOW + incremental.FULL_READ_AGE + 1
    pieces = model_pieces.Pieces(model_pieces.pack(changed, 2))

    def target() -> LVSTarget:
        return LVSTarget(state_dir=lab.directory, ipvs=lab.ipvs, routing=lab.routing,
                         clock=lambda: later)

    assert drift.drifted(target(), pieces) is None       # due: the plan reads it all
    assert target().drifted(pieces) is False
    record = incremental.load(target()._record_path())
    assert (record.applies, record.verified_at) == (0, later)
    assert drift.drifted(target(), pieces) is False      # piecewise again


def test_streamed_inputs_digest_is_the_whole_one():
    model = model_for(7, changed=(2,), extra_port=3)
    registry = {"s1": {"172.16.0.5": {"state": "draining", "weight": 0}}}
    vips = ["10.0.9.9", vip_of(1)]
    services = model.services
    shape = [(s.name, [(carrier, vip.packed) for carrier, vip in s.vips],
              [(p.protocol.value, p.port, p.scheduler, p.forward.value, p.persistence,
                p.backend_port) for p in s.ports], len(s.real_servers)) for s in services]
    servers = [(r.address.packed, r.port, r.weight)
               for r in chain.from_iterable(s.real_servers for s in services)]
    whole = hashlib.sha256(repr((fingerprint.VERSION, shape, servers, model.lvs.drain_seconds,
                                 sorted(vips), json.dumps(registry, sort_keys=True))
                                ).encode()).hexdigest()
    assert fingerprint.inputs_digest(model, registry, vips) == whole
    for per_piece in (1, 3, 100):
        pieces = model_pieces.Pieces(model_pieces.pack(model, per_piece))
        assert fingerprint.streamed_inputs_digest(
            pieces.chunks, model.lvs.drain_seconds, registry, vips) == whole
    empty = dataclasses.replace(model, services=())
    seconds = empty.lvs.drain_seconds
    assert fingerprint.streamed_inputs_digest(lambda: iter(()), seconds, {}, []) == \
        fingerprint.inputs_digest(empty, {}, []) == hashlib.sha256(repr(
            (fingerprint.VERSION, [], [], seconds, [], "{}")).encode()).hexdigest()


def test_streamed_table_digest_is_the_whole_one():
    ipvs = FakeIPVS()
    target = LVSTarget(ipvs=ipvs, routing=None)
    model = model_for(30)
    apply_plan(target, target.plan(model))
    ipvs.set_conns(WireService(2, 6, vip_of(3), 80), "172.16.0.10", 8080, 12345, 7)
    text = ipvs.proc_text()
    assert "12345" in text
    for block in (1, 7, 64, 1000, 1 << 18):
        assert fingerprint.streamed_table_digest(io.BytesIO(text.encode()), block) == \
            fingerprint.table_digest(text)


def test_the_applies_count_is_read_from_the_records_head(tmp_path):
    """The drift check's fast path reads the record's ``applies`` without loading its
    per-service digests: what load() reads, for any count; None without a record."""
    path = str(tmp_path / incremental.FILE)
    assert incremental.applies_since_full_read(path) is None
    for applies in (0, 7, 12345):
        record = incremental.Record({"tcp 10.0.0.1 80": "d" * 64}, "v", NOW, applies,
                                    ("a note with \"applies\":9,",), 3)
        incremental.save(path, record)
        assert incremental.applies_since_full_read(path) == applies
        assert incremental.load(path).applies == applies
