"""netbench over both address families (root): one real run of the shipped ``quick6``.

``netbench run quick6`` builds veth and host-gw dual-stack in namespaces and runs every
test over IPv4 and IPv6, interleaved; this checks that both families produced samples
that moved real traffic over the family they claim (iperf3's and the connection-rate
client's own record of the connection), that a test the installed tool cannot run over
IPv6 (sockperf before 3.8) is recorded skipped with the reason rather than failed while
the ``rr`` test (qperf) gives the mean latency over both families, that
the report puts each mode's IPv6 row beside its IPv4 row with the IPv6/IPv4 ratios, and
that nothing is left behind. A second, smaller run puts the CNI modes over both families:
the reference plugins' and dcnet's pods are dual-stack (dcnet's MACVLAN pods take their
IPv6 address by SLAAC from dnsmasq's router advertisements on the underlay). Traffic goes
only to addresses inside the runs' namespaces.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import textwrap

import pytest

from dcnet.lab.cni_dhcp import NET6
from dcnet.netbench import results, sockperf
from dcnet.sysio import proc

pytestmark = pytest.mark.netns

NETBENCH = os.path.join(os.path.dirname(sys.executable), "netbench")
MODES = ("veth", "host-gw")


@pytest.fixture(scope="module")
def dual_run(tmp_path_factory):
    """One run of quick6: 2 modes x 2 families x 5 tests x (1 warm-up + 2) rounds,
    less the IPv6 latency cells when sockperf cannot use IPv6."""
    out = tmp_path_factory.mktemp("netbench6") / "run"
    done = subprocess.run([NETBENCH, "run", "quick6", "-o", str(out), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    return out, done, results.load(str(out))


def _family(address: str) -> str:
    return "ipv6" if ipaddress.ip_address(address).version == 6 else "ipv4"


def test_both_families_ran_and_nothing_failed(dual_run):
    _, done, data = dual_run
    assert done.returncode == 0, done.stderr + done.stdout
    assert (data["version"], data["run"]["state"]) == (results.VERSION, "complete")
    assert data["definition"]["families"] == ["ipv4", "ipv6"]
    assert all(s["ok"] for s in data["samples"]), [s["error"] for s in data["samples"]]
    cells = {(s["mode"], s["family"], s["test"]) for s in data["samples"] if not s["warmup"]}
    latency_v6 = sockperf.ipv6_unsupported(data["environment"]["tools"]["sockperf"]) is None
    for mode in MODES:
        for test in ("tcp-1", "udp", "conn-rate", "rr"):
            assert {(mode, "ipv4", test), (mode, "ipv6", test)} <= cells
        assert (mode, "ipv4", "latency") in cells
        assert ((mode, "ipv6", "latency") in cells) == latency_v6


def test_each_family_targets_its_own_addresses(dual_run):
    _, _, data = dual_run
    for mode in MODES:
        families = data["modes"][mode]["families"]
        assert families["ipv4"]["status"] == families["ipv6"]["status"] == "ok"
        assert _family(families["ipv4"]["target"]) == "ipv4"
        target6 = ipaddress.ip_address(families["ipv6"]["target"])
        assert target6 in ipaddress.ip_network("fd00::/8"), target6
        assert set(families["ipv4"]["ports"].values()).isdisjoint(
            families["ipv6"]["ports"].values())


def test_samples_moved_real_traffic_over_their_family(dual_run):
    _, _, data = dual_run
    for sample in data["samples"]:
        metrics, details = sample["metrics"], sample["details"]
        if sample["kind"] in ("tcp", "udp"):
            assert metrics["bytes"] > 0 and metrics["gbps"] > 0
            assert _family(details["remote_host"]) == sample["family"]
            target = data["modes"][sample["mode"]]["families"][sample["family"]]["target"]
            assert details["remote_host"] == target
        elif sample["kind"] == "connrate":
            assert metrics["connections"] > 0
            wanted = "AF_INET6" if sample["family"] == "ipv6" else "AF_INET"
            assert details["address_family"] == wanted
        elif sample["kind"] == "rr":
            # qperf prints no address: the target it was given is a literal of the family
            assert metrics["mean_us"] > 0 and details["received"] > 0
            assert details["test"] == "udp_lat"
        else:
            assert 0 < metrics["p50_us"] <= metrics["p99_us"]


def test_skipped_latency_is_recorded_with_the_reason(dual_run):
    _, _, data = dual_run
    reason = sockperf.ipv6_unsupported(data["environment"]["tools"]["sockperf"])
    if reason is None:
        pytest.skip("this sockperf measures over IPv6: nothing is skipped")
    for mode in MODES:
        families = data["modes"][mode]["families"]
        assert families["ipv6"]["skipped_tests"] == {"latency": reason}
        assert families["ipv4"]["skipped_tests"] == {}
        assert "sockperf-udp" not in families["ipv6"]["servers"]


def test_report_puts_ipv6_beside_ipv4(dual_run):
    out, _, _ = dual_run
    text = (out / "report.md").read_text()
    rows = [line.split(" | ")[0].lstrip("| ") for line in
            text.split("## Ratios")[1].split("## IPv6 / IPv4")[0].splitlines()
            if line.startswith("| ") and not line.startswith(("| mode", "| ---"))]
    assert rows == ["veth", "veth IPv6", "host-gw", "host-gw IPv6"]
    family_table = text.split("## IPv6 / IPv4 per mode")[1].split("##")[0]
    assert "| veth | " in family_table and "| host-gw | " in family_table
    assert "x [" in family_table or "x* [" in family_table
    for plot in ("throughput.png", "connrate.png", "cpu.png", "rr.png"):
        assert (out / plot).stat().st_size > 0


def test_dual_stack_run_tears_everything_down(dual_run):
    _, _, data = dual_run
    assert data["run"]["teardown"]["namespaces_left"] == []
    for mode in MODES:
        info = data["modes"][mode]
        for prefix in info["lab_prefixes"]:
            assert not os.path.exists(f"/run/dcnet-lab/{prefix}.json")
        for family in ("ipv4", "ipv6"):
            for key, server in info["families"][family]["servers"].items():
                assert not proc.is_same_process(server["pid"], server["start_time"]), \
                    (mode, family, key)


CNI_DUAL = textwrap.dedent("""\
    netbench: 1
    name: cni-dual
    baseline: cni-ref-bridge
    repeats: 1
    warmup_rounds: 0
    families: [ipv4, ipv6]
    modes: [cni-ref-bridge, cni-ref-macvlan, cni-dcnet-host-gw, cni-dcnet-macvlan]
    tests:
      - {name: tcp-1, kind: tcp, duration: 1, omit: 0}
      - {name: conn-rate, kind: connrate, duration: 1}
    """)


def test_cni_modes_over_both_families(tmp_path):
    path = tmp_path / "cni-dual.yaml"
    path.write_text(CNI_DUAL)
    done = subprocess.run([NETBENCH, "run", str(path), "-o", str(tmp_path / "run"),
                           "--no-progress"], capture_output=True, text=True, timeout=600)
    data = results.load(str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr + done.stdout
    assert all(s["ok"] for s in data["samples"]), [s["error"] for s in data["samples"]]
    ran = {(s["mode"], s["family"], s["test"]) for s in data["samples"]}
    for mode in ("cni-ref-bridge", "cni-ref-macvlan", "cni-dcnet-host-gw"):
        assert {(mode, f, t) for f in ("ipv4", "ipv6") for t in ("tcp-1", "conn-rate")} <= ran
    for sample in data["samples"]:
        if sample["kind"] == "tcp":
            assert _family(sample["details"]["remote_host"]) == sample["family"]
        else:
            assert sample["details"]["address_family"] == (
                "AF_INET6" if sample["family"] == "ipv6" else "AF_INET")
    assert data["run"]["teardown"]["namespaces_left"] == []
    macvlan = data["modes"]["cni-dcnet-macvlan"]
    if macvlan["status"] == "unavailable":
        pytest.skip(f"cni-dcnet-macvlan: {macvlan['reason']}")
    assert macvlan["status"] == "ok"
    families = macvlan["families"]
    assert families["ipv4"]["status"] == families["ipv6"]["status"] == "ok"
    # the IPv6 target is the pod's SLAAC address in the underlay's /64 announced by dnsmasq
    assert ipaddress.ip_address(families["ipv6"]["target"]) in ipaddress.ip_network(
        f"{NET6}/64")
    assert {("cni-dcnet-macvlan", f, t) for f in ("ipv4", "ipv6")
            for t in ("tcp-1", "conn-rate")} <= ran
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| cni-dcnet-macvlan IPv6 | " in report
