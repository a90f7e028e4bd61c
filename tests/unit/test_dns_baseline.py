"""The carrier-list guard against a recorded baseline (issue 14): repeated small cuts
(100 -> 70 -> 50) are caught although each step changes at most 30% of the installed
list; --force resets the baseline; the DNS target records it after a successful apply."""

from __future__ import annotations

import ipaddress
import json
import os
from types import SimpleNamespace

import pytest

from dcnet.dns import carriers
from dcnet.dns.backend import BASELINE, DNSTarget

pytestmark = pytest.mark.unit

HUNDRED = tuple(ipaddress.ip_network(f"10.{i}.0.0/16") for i in range(100))


def text(networks) -> list[str]:
    return sorted(str(n) for n in networks)


def test_repeated_small_cuts_are_caught_against_the_baseline():
    baseline = carriers.next_baseline({}, {"t": HUNDRED}, forced=False)
    seventy, fifty = HUNDRED[:70], HUNDRED[:50]
    # step 1: 100 -> 70, 30% of both the installed list and the baseline: allowed
    assert carriers.change_guard({"t": HUNDRED}, {"t": seventy}) == []
    assert carriers.baseline_guard(baseline, {"t": seventy}) == []
    baseline = carriers.next_baseline(baseline, {"t": seventy}, forced=False)
    assert baseline["t"] == text(HUNDRED)                  # small changes keep the baseline
    # step 2: 70 -> 50 is 29% of the installed list but 50% of the baseline: refused
    assert carriers.change_guard({"t": seventy}, {"t": fifty}) == []
    with pytest.raises(carriers.CarrierListError, match=r"drops 50 of the 100 .*50%"):
        carriers.baseline_guard(baseline, {"t": fifty})
    # forced: let through, reported, and the baseline moves to the forced list
    [cut] = carriers.baseline_guard(baseline, {"t": fifty}, force=True)
    assert (cut.carrier, cut.baseline, cut.removed) == ("t", 100, 50)
    assert carriers.next_baseline(baseline, {"t": fifty}, forced=True)["t"] == text(fifty)


def test_additions_do_not_count_and_a_new_carrier_gets_its_first_list():
    baseline = {"t": text(HUNDRED[:10])}
    grown = {"t": HUNDRED[:40], "new": HUNDRED[50:60]}
    assert carriers.baseline_guard(baseline, grown) == []
    after = carriers.next_baseline(baseline, grown, forced=False)
    assert after == {"t": text(HUNDRED[:10]), "new": text(HUNDRED[50:60])}


def test_the_target_records_the_plans_baseline_after_a_successful_apply(tmp_path):
    target = DNSTarget(directory=str(tmp_path / "bind"), key_file=str(tmp_path / "k"))
    assert target._baseline() == {}
    record = {"t": tuple(text(HUNDRED[:3]))}
    plan = SimpleNamespace(payload=SimpleNamespace(baseline=record))
    target.finish(plan, SimpleNamespace(ok=False))
    assert not os.path.exists(tmp_path / "bind" / BASELINE)      # failed: nothing recorded
    target.finish(plan, SimpleNamespace(ok=True))
    path = tmp_path / "bind" / BASELINE
    assert json.loads(path.read_text()) == {"t": text(HUNDRED[:3])}
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert target._baseline() == {"t": text(HUNDRED[:3])}
