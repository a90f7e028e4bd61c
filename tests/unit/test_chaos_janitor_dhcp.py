"""The macvlan janitor's pure judgement: which journaled leases and host-shim routes
belong to no pod (dcnet.chaos.janitor_dhcp.judge, judge_routes)."""

from __future__ import annotations

from dcnet.chaos import janitor_dhcp as jd


def record(cid: str, state: str = "bound", address: str | None = "10.0.0.5/24",
           updated: float = 100.0, network: str = "mvnet") -> dict:
    return {"network": network, "containerID": cid, "ifname": "eth0", "state": state,
            "configured": {"address": address} if address else None, "updated": updated,
            "netns": f"/run/netns/{cid}"}


def test_gone_namespaces_and_lost_links_are_unused_unknown_and_alive_are_kept():
    records = [record("a"), record("b", address="10.0.0.6/24"),
               record("c", address="10.0.0.7/24"), record("d", address="10.0.0.8/24"),
               record("x", network="other")]
    states = {"a+eth0": jd.ALIVE, "b+eth0": jd.GONE, "c+eth0": jd.NO_LINK,
              "d+eth0": jd.UNKNOWN, "x+eth0": jd.GONE}
    unused, kept = jd.judge(records, states, "mvnet", now=1000.0, min_age=60)
    assert [(u["containerID"], u["reason"]) for u in unused] == [
        ("b", jd.REASONS[jd.GONE]), ("c", jd.REASONS[jd.NO_LINK])]
    assert [r["containerID"] for r in kept] == ["a", "d"]


def test_a_pending_record_is_unused_only_once_older_than_min_age():
    young = record("p", state="pending", address=None, updated=990.0)
    old = record("q", state="pending", address=None, updated=100.0)
    states = {"p+eth0": jd.GONE, "q+eth0": jd.ALIVE}
    unused, kept = jd.judge([young, old], states, "mvnet", now=1000.0, min_age=60)
    assert [(u["containerID"], u["reason"]) for u in unused] == [
        ("q", jd.REASONS[jd.STALE_PENDING])]
    assert [r["containerID"] for r in kept] == ["p"]


def test_shim_routes_of_kept_leases_stay_those_of_unused_ones_go_with_them():
    kept = [record("a", address="10.0.0.5/24")]
    unused, _ = jd.judge([record("b", address="10.0.0.6/24")], {"b+eth0": jd.GONE},
                         "mvnet", 1000.0, 60)
    found = jd.judge_routes(["10.0.0.5", "10.0.0.6", "10.0.0.9"], kept, unused)
    assert [(r["dst"], r["with_lease"]) for r in found] == [("10.0.0.6", True),
                                                            ("10.0.0.9", False)]
    assert "b" in found[0]["reason"] and "no lease" in found[1]["reason"]
