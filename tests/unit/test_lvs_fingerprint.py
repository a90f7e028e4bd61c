"""The verified-snapshot fast path of the LVS back end (dcnet.lvs.fingerprint), over the
fake IPVS (whose bulk read is the kernel's /proc/net/ip_vs text): a no-op after a clean
apply skips the IPVS read; any change of the table (but its connection counters), of the
model or of the registry, a pending drain, a failed apply, a bad record or --exact-read
make the next plan read everything, and it converges."""

from __future__ import annotations

import errno
import os

import pytest

from dcnet.lvs import fingerprint
from dcnet.lvs.fake import FakeIPVS
from dcnet.lvs.ipvs import (
    CMD_DEL_SERVICE,
    CMD_NEW_DEST,
    CMD_NEW_SERVICE,
    CMD_SET_DEST,
    Request,
    WireDest,
    WireService,
)
from dcnet.lvs.layout import layouts
from dcnet.model import parse_model
from tests.unit.test_lvs_plan import JOB, MODEL, NOW, TEXT, apply, target

pytestmark = pytest.mark.unit

NOTE = "IPVS unchanged since the last apply"
SERVICE = WireService(2, 6, "198.51.100.10", 80, sched="wrr")


@pytest.fixture
def backend(tmp_path):
    """A back end over the fake after a first clean apply of MODEL."""
    backend = target(FakeIPVS(), tmp_path)
    plan = backend.plan(MODEL)
    first = apply(backend, plan)
    assert first.ok and first.writes["ipvs"] == 6 and not plan.payload.fast_path
    return backend


def fresh(backend, **kw):
    """A new target (a new elbctl process) on the same table and state directory."""
    return target(backend.ipvs, backend.store.directory, **kw)


def took_fast_path(backend, plan) -> bool:
    noted = any(n.startswith(NOTE) for n in plan.notes)
    assert noted == plan.payload.fast_path, plan.notes
    return noted


def converges(backend, model=MODEL) -> str:
    """Plan (it must take the full read), apply, then plan again: empty and fast.
    Returns the first plan's text."""
    the_plan = backend.plan(model)
    assert not took_fast_path(backend, the_plan)
    assert apply(backend, the_plan).ok
    again = fresh(backend)
    plan = again.plan(model)
    assert plan.empty and took_fast_path(again, plan), plan.to_text()
    return the_plan.to_text()


def test_second_plan_after_apply_is_empty_and_skips_the_ipvs_read(backend, monkeypatch):
    second = fresh(backend)
    # the fast path neither parses the file nor dumps services nor reads dests
    for name in ("services", "dests", "dest_rows", "all_dest_rows"):
        monkeypatch.setattr(second.ipvs, name, _forbidden(name))
    the_plan = second.plan(MODEL)
    assert the_plan.empty and took_fast_path(second, the_plan)
    digest = fingerprint.table_digest(backend.ipvs.proc_text())
    assert f"(fingerprint {digest[:12]})" in next(n for n in the_plan.notes if NOTE in n)
    result = apply(second, the_plan)
    assert result.ok and result.writes["netlink"] == 0


def _forbidden(name):
    def call(*_a, **_k):
        raise AssertionError(f"the fast path called {name}()")
    return call


def test_the_record_is_the_pair_of_digests(backend):
    saved = backend.store.fingerprint()
    assert saved["table"] == fingerprint.table_digest(backend.ipvs.proc_text())
    vips = ("198.51.100.10", "203.0.113.10")
    assert saved["inputs"] == fingerprint.inputs_digest(MODEL, {}, vips)
    assert saved["notes"] == [] and saved["objects"] == 6


def test_changed_weight_is_seen_and_repaired(backend):
    backend.ipvs.execute([Request(CMD_SET_DEST, SERVICE, WireDest(2, "10.0.0.1", 8080,
                                                                   fwd=0, weight=7))])
    assert "~ dest tcp 198.51.100.10 80 10.0.0.1 8080 (weight 7 -> 10)" in converges(backend)


def test_added_dest_is_seen_and_removed(backend):
    backend.ipvs.execute([Request(CMD_NEW_DEST, SERVICE, WireDest(2, "10.0.0.9", 8080))])
    assert "- dest tcp 198.51.100.10 80 10.0.0.9 8080" in converges(backend)


def test_removed_service_is_seen_and_restored(backend):
    backend.ipvs.execute([Request(CMD_DEL_SERVICE, SERVICE)])
    text = converges(backend)
    assert "+ service tcp 198.51.100.10 80" in text
    assert "+ dest tcp 198.51.100.10 80 10.0.0.2 8080" in text


def test_foreign_service_breaks_the_fingerprint_and_is_reported_on_the_fast_path(backend):
    backend.ipvs.execute([Request(CMD_NEW_SERVICE, WireService(2, 6, "192.0.2.99", 80,
                                                               sched="rr"))])
    first = fresh(backend)
    the_plan = first.plan(MODEL)
    assert the_plan.empty and not took_fast_path(first, the_plan)
    assert apply(first, the_plan).ok
    again = fresh(backend)
    fast = again.plan(MODEL)
    assert took_fast_path(again, fast)
    # the record repeats what the full read noted: the service left alone
    assert any("1 IPVS service(s) not on an elbctl VIP: tcp 192.0.2.99:80" in n
               for n in fast.notes)


def test_connection_counters_alone_keep_the_fast_path(backend):
    backend.ipvs.set_conns(SERVICE, "10.0.0.1", 8080, 42, inactive=7)
    assert "42" in backend.ipvs.proc_text()
    again = fresh(backend)
    the_plan = again.plan(MODEL)
    assert the_plan.empty and took_fast_path(again, the_plan)


def test_changed_model_takes_the_full_path(backend):
    model = parse_model(TEXT.replace("weight: 10", "weight: 3"), source="m.yaml")
    text = converges(backend, model)
    assert "(weight 10 -> 3)" in text


def test_changed_drain_seconds_takes_the_full_path(backend):
    model = parse_model(TEXT + "lvs: {drain_seconds: 60}\n", source="m.yaml")
    assert model.lvs.drain_seconds == 60
    again = fresh(backend)
    the_plan = again.plan(model)
    assert the_plan.empty and not took_fast_path(again, the_plan)


def test_changed_registry_takes_the_full_path(backend):
    backend.store.save_registry({JOB: {"10.0.0.7": {"weight": 4, "state": "active"}}})
    assert "+ dest tcp 198.51.100.10 80 10.0.0.7 8080 (forward=nat, weight=4)" in \
        converges(backend)


def test_pending_drain_disables_it_until_the_drain_ends(backend, tmp_path):
    model = parse_model(TEXT.replace(", {address: 10.0.0.2}", ""), source="m.yaml")
    backend.ipvs.set_conns(SERVICE, "10.0.0.2", 8080, 3)
    draining = fresh(backend)
    assert apply(draining, draining.plan(model)).ok
    assert draining.store.drain_set() and draining.store.fingerprint() is None
    again = fresh(backend)
    the_plan = again.plan(model)
    assert not took_fast_path(again, the_plan)
    assert apply(again, the_plan).ok
    later = target(backend.ipvs, tmp_path, clock=lambda: NOW + 301)
    the_plan = later.plan(model)
    assert [c.describe() for c in the_plan.changes] == [
        "- dest tcp 198.51.100.10 80 10.0.0.2 8080 (forward=nat, weight=0)"]
    assert not the_plan.payload.fast_path
    assert apply(later, later.plan(model)).ok and later.store.drain_set() == {}
    done = fresh(backend).plan(model)
    assert done.empty and done.payload.fast_path


def test_exact_read_disables_it(backend):
    exact = fresh(backend, exact_read=True)
    the_plan = exact.plan(MODEL)
    assert the_plan.empty and not took_fast_path(exact, the_plan)


def test_failed_apply_removes_the_record_and_the_next_plan_reads_all(backend):
    backend.ipvs.execute([Request(CMD_DEL_SERVICE, SERVICE)])
    failing = fresh(backend)
    failing.ipvs.fail_on = {CMD_NEW_DEST: errno.ENOMEM}
    result = apply(failing, failing.plan(MODEL))
    assert not result.ok and failing.store.fingerprint() is None
    failing.ipvs.fail_on = {}
    converges(backend)


@pytest.mark.parametrize("content", ["{not json", "[]", '{"version": 1, "table": "x"}'])
def test_missing_or_corrupt_record_means_a_full_read(backend, content):
    path = backend.store.path("ipvs_fingerprint.json")
    os.unlink(path)
    again = fresh(backend).plan(MODEL)
    assert again.empty and not again.payload.fast_path
    with open(path, "w") as fh:
        fh.write(content)
    again = fresh(backend).plan(MODEL)
    assert again.empty and not again.payload.fast_path


def test_masking_keeps_everything_but_the_counters():
    dest = "  -> C6336414:1F90      Masq    7      {}          {}         \n"
    head = ("IP Virtual Server version 1.2.1 (size=4096)\n"
            "Prot LocalAddress:Port Scheduler Flags\n"
            "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"
            "TCP  C000020A:0050 wrr  \n")
    quiet, busy = head + dest.format(0, 0), head + dest.format(12345, 678)
    assert fingerprint.masked(busy) == fingerprint.masked(quiet)
    assert "Masq    7" in fingerprint.masked(busy) and "12345" not in fingerprint.masked(busy)
    assert fingerprint.table_digest(quiet) == fingerprint.table_digest(busy)
    for changed in (quiet.replace("Masq    7", "Masq    8"), quiet.replace("1F90", "1F91"),
                    quiet.replace("Masq ", "Route"), quiet.replace(" wrr", " rr ")):
        assert fingerprint.table_digest(changed) != fingerprint.table_digest(quiet)


def test_masking_covers_every_dest_line_the_kernel_printed():
    """Text captured from the kernel (tests/data/lvs): every dest line (IPv4 and IPv6,
    each forwarding method) loses its counters, and nothing else changes."""
    from tests.unit.test_lvs_procfs import CAPTURED

    dest_lines = [line for line in CAPTURED.splitlines()
                  if line.startswith("  -> ") and "RemoteAddress" not in line]
    masked = fingerprint.masked(CAPTURED).splitlines()
    assert len(masked) == len(CAPTURED.splitlines()) and len(dest_lines) >= 8
    for before, after in zip(CAPTURED.splitlines(), masked, strict=True):
        if before in dest_lines:
            assert before.split()[:4] == after.split() and len(after.split()) == 4
        else:
            assert after == before


def _digest(text: str, registry=None, vips=("198.51.100.10", "203.0.113.10")) -> str:
    return fingerprint.inputs_digest(parse_model(text, source="m.yaml"), registry or {}, vips)


@pytest.mark.parametrize("old, new", [
    ("weight: 10}", "weight: 11}"),                                  # server weight
    ("{address: 10.0.0.2}", "{address: 10.0.0.3}"),                  # server address
    ("{address: 10.0.0.2}", "{address: 10.0.0.2, port: 9090}"),      # server port
    ("scheduler: wrr", "scheduler: rr"),
    ("forward: nat, target_port: 8080", "forward: dr"),
    ("target_port: 8080", "target_port: 8081"),
    ("{port: 80,", "{port: 81,"),
    ("{port: 80,", "{port: 80, protocol: udp,"),
    ("{port: 80,", "{port: 80, persistence: 60,"),
    ("bgp: 203.0.113.10", "bgp: 203.0.113.11"),                      # a VIP
    ("job: job.web_service", "job: job.api_service"),                # the service name
])
def test_inputs_digest_changes_with_every_field_layouts_read(old, new):
    assert old in TEXT
    changed = TEXT.replace(old, new)
    assert layouts(parse_model(changed, source="m.yaml")) != layouts(MODEL)
    assert _digest(changed) != _digest(TEXT)


def test_inputs_digest_is_canonical_and_covers_registry_vips_and_drain_seconds():
    assert _digest(TEXT) == _digest(TEXT)              # two loads of the same text
    assert _digest(TEXT, {JOB: {"10.0.0.7": {"weight": 4, "state": "active"}}}) != \
        _digest(TEXT)
    assert _digest(TEXT, vips=("198.51.100.10",)) != _digest(TEXT)
    assert _digest(TEXT + "lvs: {drain_seconds: 60}\n") != _digest(TEXT)
    # what layouts do not read (health checks) does not matter
    checked = TEXT.replace("    real_servers:", "    health_check: {type: tcp, interval: 9}\n"
                           "    real_servers:")
    assert parse_model(checked, source="m.yaml").services != MODEL.services
    assert _digest(checked) == _digest(TEXT)


def test_a_proc_text_the_read_rejects_is_never_recorded(backend, monkeypatch):
    """A text whose services differ from the dump (dcnet.lvs.reader.read_ipvs) is not
    trusted for dests, so its digest is not recorded either."""
    other = FakeIPVS().proc_text()
    again = fresh(backend)
    monkeypatch.setattr(again.ipvs, "proc_text", lambda: other)
    the_plan = again.plan(MODEL)
    assert the_plan.empty and not the_plan.payload.fast_path
    assert again.bulk_read_rejected == 1
    assert apply(again, the_plan).ok and again.store.fingerprint() is None
    monkeypatch.undo()
    converges(backend)
