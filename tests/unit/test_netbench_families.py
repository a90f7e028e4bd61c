"""netbench address families (issue 21): the ``families`` field, the (mode, family, test)
schedule, dual-stack topologies, result format 2 (and reading 1), the report's IPv6 rows
and IPv6/IPv4 ratios, compare and plots per family, and the clients' IPv6 forms."""

from __future__ import annotations

import ipaddress
import itertools
import json
import random
import socket
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from dcnet.lab.topology import Topology
from dcnet.netbench import (
    buildcontext,
    catalogue,
    cnimodes,
    compare,
    connrate,
    definition,
    engine,
    iperf3,
    modes,
    plots,
    qperf,
    report,
    results,
    sampler,
    schedule,
    sockperf,
    summary,
    topologies,
)
from dcnet.netbench.definition import DefinitionError

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent.parent / "data" / "netbench"
SOCKPERF_37 = "sockperf, version 3.7-no.git"

BASE = textwrap.dedent("""\
    netbench: 1
    name: dual
    baseline: veth
    modes: [veth, host-gw]
    families: [ipv4, ipv6]
    tests:
      - {name: tcp-1, kind: tcp}
      - {name: lat, kind: latency}
    """)


def errors_of(text: str) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        definition.loads(text, "bench.yaml")
    return [str(problem) for problem in info.value.problems]


# ------------------------------------------------------------------ definition


def test_families_default_to_ipv4_and_round_trip():
    old = definition.loads(BASE.replace("families: [ipv4, ipv6]\n", ""), "old.yaml")
    assert old.families == ("ipv4",)
    assert old.to_dict()["families"] == ["ipv4"]
    dual = definition.loads(BASE.replace("[ipv4, ipv6]", "[ipv6, ipv4]"))
    assert dual.families == ("ipv4", "ipv6")  # always in this order: IPv4 rows first
    assert definition.loads(BASE.replace("[ipv4, ipv6]", "[ipv6]")).families == ("ipv6",)


@pytest.mark.parametrize("value, expected", [
    ("[ipv4, ipx]", "bench.yaml:5: families[1]: unknown address family 'ipx' (known: ipv4, "
                    "ipv6)"),
    ("[ipv6, ipv6]", "bench.yaml:5: families[1]: duplicate address family 'ipv6'"),
    ("[]", "bench.yaml:5: families: at least one address family is required (ipv4, ipv6)"),
    ("ipv6", "bench.yaml:5: families: families must be a list, got a string"),
])
def test_bad_families_name_the_field(value, expected):
    assert errors_of(BASE.replace("[ipv4, ipv6]", value)) == [expected]


def test_shipped_quick6_runs_two_modes_over_both_families_briefly():
    loaded = definition.load(definition.builtin("quick6"))
    assert loaded.families == ("ipv4", "ipv6") and len(loaded.modes) == 2
    assert all(test.duration <= 1 for test in loaded.tests)
    assert {test.kind for test in loaded.tests} == {"tcp", "udp", "latency", "rr", "connrate"}


# ------------------------------------------------------------------ schedule


def test_schedule_interleaves_mode_family_and_test_and_honours_skips():
    skip = {("b", "ipv6", "t2")}
    items = schedule.plan(["a", "b"], ["t1", "t2"], 3, 1, seed=3,
                          families=("ipv4", "ipv6"), skip=skip)
    cells = set(itertools.product("ab", ("ipv4", "ipv6"), ("t1", "t2"))) - skip
    assert len(items) == 4 * len(cells)
    for round_index in range(4):
        in_round = [(i.mode, i.family, i.test) for i in items if i.round == round_index]
        assert sorted(in_round) == sorted(cells)
    families_in_order = [i.family for i in items]
    assert families_in_order != sorted(families_in_order)  # interleaved, not v4 then v6


def test_one_family_keeps_the_order_of_the_pair_schedule():
    rng = random.Random(4)
    expected = []
    for _ in range(3):
        pairs = [(mode, test) for mode in "abc" for test in ("t1", "t2")]
        rng.shuffle(pairs)
        expected += pairs
    items = schedule.plan(["a", "b", "c"], ["t1", "t2"], 2, 1, 4)
    assert [(i.mode, i.test) for i in items] == expected
    assert {i.family for i in items} == {"ipv4"}


# ------------------------------------------------------------------ topologies and modes

DUAL = {"veth": topologies.veth(True), "bridge": topologies.bridge(True),
        "host-gw": topologies.host_gw(True), "vxlan": topologies.vxlan(True)}


def _addresses(topology: dict) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    found = []
    for link in topology.get("links", []):
        for end in (link["a"], link["b"]):
            found += [ipaddress.ip_interface(a) for a in end.get("addresses", [])]
    for bridge in topology.get("bridges", []):
        found += [ipaddress.ip_interface(a) for a in bridge.get("addresses", [])]
    return found


@pytest.mark.parametrize("name", sorted(DUAL))
def test_dual_stack_topologies_validate_and_twin_every_address(name):
    topology = DUAL[name]
    Topology.from_dict(topology)
    found = _addresses(topology)
    v4 = [a for a in found if a.version == 4]
    v6 = [a for a in found if a.version == 6]
    assert v4 and len(v6) == len(v4)
    assert all(a.ip in ipaddress.ip_network("fd00:6e62::/32") for a in v6)


def test_ipv6_ranges_are_distinct_per_mode_and_absent_unless_asked():
    seen: dict = {}
    networks = {name: {a.network for a in _addresses(t) if a.version == 6}
                for name, t in DUAL.items()}
    networks["macvlan"] = {ipaddress.ip_interface(a).network
                           for _, a in topologies.MACVLAN_PODS_V6}
    for name, nets in networks.items():
        for network in nets:
            assert network not in seen, f"{name} reuses {network} of {seen.get(network)}"
            seen[network] = name
    assert all(a.version == 4 for a in _addresses(topologies.host_gw()))


def test_reference_cni_nodes_get_ipv6_underlay_and_routes():
    topology = topologies.cni_nodes(67, node_routes=True, ipv6=True)
    Topology.from_dict(topology)
    assert {(r["host"], r["dst"]) for r in topology["routes"] if ":" in r["via"]} == {
        ("n1", "fd00:6e62:67:2::/64"), ("n2", "fd00:6e62:67:1::/64")}
    assert cnimodes.pod_addresses({"ips": [
        {"address": "10.67.1.2/24"}, {"address": "fd00:6e62:67:1::2/64"}]}) == {
        "ipv4": "10.67.1.2", "ipv6": "fd00:6e62:67:1::2"}


def test_dcnet_host_gw_dual_stack_conf_is_accepted_by_this_build():
    conf = cnimodes.dcnet_host_gw_conf(66, "/w", "n1", True)["plugins"][0]
    assert conf["clusterCIDR"] == ["10.66.0.0/16", "fd00:6e62:66::/48"]
    assert conf["subnetLenV6"] == 64
    assert cnimodes.dcnet_host_gw_conf(66, "/w", "n1", False)["plugins"][0][
        "clusterCIDR"] == "10.66.0.0/16"
    assert cnimodes.dcnet_ipv6_unsupported() is None


def test_cross_node_ipv6_routes_and_forwarding():
    topology = topologies.host_gw(True)
    routers = [h for h in topology["hosts"] if isinstance(h, dict)]
    assert all(h["sysctls"]["net.ipv6.conf.all.forwarding"] == 1 for h in routers)
    v6_routes = [r for r in topology["routes"] if ":" in r["via"]]
    assert {(r["host"], r["dst"]) for r in v6_routes} == {
        ("p1", "default"), ("p2", "default"),
        ("n1", "fd00:6e62:64:2::/64"), ("n2", "fd00:6e62:64:1::/64")}
    assert all(":" not in r["via"] for r in topologies.vxlan(True)["routes"]
               if r["host"].startswith("n"))  # the overlay adds its own after the build


def test_every_mode_runs_over_ipv6_and_a_mode_without_it_would_say_why(monkeypatch):
    for name in catalogue.MODE_NAMES:
        assert catalogue.info(name).ipv6 and modes.family_unavailable(name, "ipv6") is None
    legacy = catalogue.ModeInfo("v4-only", "t", "p", ipv6_reason="IPv4 only: no v6 VIP")
    assert not legacy.ipv6
    monkeypatch.setitem(catalogue.BY_NAME, "v4-only", legacy)
    assert modes.family_unavailable("v4-only", "ipv6") == "IPv4 only: no v6 VIP"
    assert modes.family_unavailable("v4-only", "ipv4") is None


def test_ipvs_dual_stack_topology_and_requests():
    topology = topologies.ipvs(True)
    Topology.from_dict(topology)
    director = topology["links"][0]["b"]["addresses"]
    assert f"{topologies.IPVS_VIP6}/128" in director and f"{topologies.IPVS_VIP}/32" in director
    assert ipaddress.ip_address(topologies.IPVS_VIP6) in ipaddress.ip_network(
        "fd00:6e62:69::/64")
    # canonical, as iperf3 reports the address it reached (remote_host)
    assert str(ipaddress.ip_address(topologies.IPVS_VIP6)) == topologies.IPVS_VIP6
    assert {r["via"] for r in topology["routes"]} == {"10.69.1.1", "fd00:6e62:69:1::1"}
    assert all(a.version == 4 for a in _addresses(topologies.ipvs()))
    requests = modes.ipvs_requests([(topologies.IPVS_VIP6, "fd00:6e62:69:1::2", [5301]),
                                    (topologies.IPVS_VIP, "10.69.1.2", [5201])])
    assert len(requests) == 8   # per family and protocol: the service, then its real server
    v6_tcp, v6_tcp_dest = requests[0].service, requests[1].dest
    assert (v6_tcp.family, v6_tcp.netmask, v6_tcp.sched) == (socket.AF_INET6, 128, "rr")
    assert (v6_tcp_dest.addr, v6_tcp_dest.port, v6_tcp_dest.fwd) == ("fd00:6e62:69:1::2",
                                                                     5301, 0)
    assert requests[4].service.netmask == 0xFFFFFFFF
    assert {r.service.protocol for r in requests} == {socket.IPPROTO_TCP, socket.IPPROTO_UDP}


# ------------------------------------------------------------------ clients


def test_iperf3_client_forces_ipv6_for_an_ipv6_target():
    test = definition.TestSpec(name="t", kind="tcp")
    argv6 = iperf3.client_argv(test, "fd00:6e62:61::2", 5301)
    assert argv6[:3] == ["iperf3", "-c", "fd00:6e62:61::2"] and "-6" in argv6
    assert "-6" not in iperf3.client_argv(test, "10.61.0.2")
    assert iperf3.server_argv("fd00:6e62:61::2", 5301)[-3:] == ["fd00:6e62:61::2", "-p",
                                                                "5301"]


def test_iperf3_records_the_connected_addresses():
    document = json.loads((DATA / "iperf3_tcp1.json").read_text())
    document["start"]["connected"] = [{"local_host": "fd00:6e62:61::1",
                                       "remote_host": "fd00:6e62:61::2"}]
    details = iperf3.parse(json.dumps(document)).details
    assert details["remote_host"] == "fd00:6e62:61::2"


def test_connrate_reports_the_address_family():
    line = json.dumps({"tool": "dcnet-connrate", "connections": 10, "failures": {},
                       "seconds": 1.0, "family": "AF_INET6"})
    assert connrate.parse(line).details["address_family"] == "AF_INET6"


def test_sockperf_37_cannot_do_ipv6_and_latency_is_skipped_for_it():
    assert "sockperf 3.7 cannot use IPv6" in sockperf.ipv6_unsupported(SOCKPERF_37)
    assert sockperf.ipv6_unsupported("sockperf, version 3.10-0.git") is None
    loaded = definition.loads(BASE)
    reason = sockperf.ipv6_unsupported(SOCKPERF_37)
    assert engine.test_skips(loaded, SOCKPERF_37) == {("ipv6", "lat"): reason}
    assert engine.test_skips(loaded, "sockperf, version 3.8") == {}
    v4_only = definition.loads(BASE.replace("[ipv4, ipv6]", "[ipv4]"))
    assert engine.test_skips(v4_only, SOCKPERF_37) == {}


def test_rr_runs_qperf_over_both_families_on_its_own_ports():
    loaded = definition.loads(BASE + "  - {name: rr, kind: rr, protocol: udp}\n")
    assert ("ipv6", "rr") not in engine.test_skips(loaded, SOCKPERF_37)
    rr = loaded.test("rr")
    assert sampler.RUNNERS["rr"] is qperf and sampler.port_key(rr) == "qperf"
    ports4, ports6 = buildcontext.DEFAULT_PORTS, buildcontext.DEFAULT_PORTS_V6
    assert ports6["qperf"] == ports4["qperf"] + 100
    assert ports6["qperf-data"] == ports4["qperf-data"] + 100
    live = SimpleNamespace(target="fd00:6e62:61::2", ports=dict(ports6))
    argv = sampler.client_argv(rr, live, None)
    assert argv[-2:] == ["fd00:6e62:61::2", "udp_lat"]
    assert argv[argv.index("--ip_port") + 1] == str(ports6["qperf-data"])
    assert sampler.server_argv("qperf", live) == (qperf.server_argv(ports6["qperf"]), "tcp")


# ------------------------------------------------------------------ results and report


def dual_document() -> dict:
    """veth and host-gw over both families (host-gw IPv6 latency skipped), cni-ref-bridge
    IPv4 only; throughput values chosen so the ratios are exact."""
    gbps = {("veth", "ipv4"): 10.0, ("veth", "ipv6"): 8.0,
            ("host-gw", "ipv4"): 5.0, ("host-gw", "ipv6"): 6.0,
            ("cni-ref-bridge", "ipv4"): 4.0}
    samples = []
    for (mode, family), value in gbps.items():
        for index in range(6):
            noise = (index - 3) * 0.01 * value  # measured rounds 1..5: median = value
            samples.append({"mode": mode, "family": family, "test": "tcp-1", "kind": "tcp",
                            "round": index, "warmup": index == 0, "ok": True,
                            "metrics": {"gbps": value + noise}, "load_average": [1.0]})
    skipped = {"lat": "sockperf 3.7 cannot use IPv6 addresses"}
    fam = {"veth": {"ipv4": {"status": "ok"}, "ipv6": {"status": "ok"}},
           "host-gw": {"ipv4": {"status": "ok"},
                       "ipv6": {"status": "ok", "skipped_tests": skipped}},
           "cni-ref-bridge": {"ipv4": {"status": "ok"}, "ipv6": {
               "status": "skipped", "reason": "IPv6 not supported by this mode yet"}}}
    return {"format": results.FORMAT, "version": results.VERSION,
            "run": {"state": "complete", "started": 0, "finished": 0, "errors": []},
            "definition": {"name": "dual", "modes": list(fam), "baseline": "veth",
                           "families": ["ipv4", "ipv6"], "repeats": 5, "warmup_rounds": 1,
                           "seed": 1, "min_effect": 0.05,
                           "tests": [{"name": "tcp-1", "kind": "tcp"},
                                     {"name": "lat", "kind": "latency"}]},
            "environment": {},
            "modes": {m: {"status": "ok", "path": "p", "interfaces": [{"mtu": 1500}],
                          "families": f} for m, f in fam.items()},
            "samples": samples}


def test_figures_compare_within_a_family_and_ipv6_to_ipv4():
    figures = summary.figures(dual_document())
    host_gw6 = summary.find(figures, "host-gw", "tcp-1", "gbps", "ipv6")
    assert host_gw6.vs_baseline.ratio == pytest.approx(6.0 / 8.0)   # / veth IPv6
    assert host_gw6.vs_ipv4.ratio == pytest.approx(6.0 / 5.0)       # / host-gw IPv4
    assert host_gw6.vs_ipv4.significant
    host_gw4 = summary.find(figures, "host-gw", "tcp-1", "gbps")
    assert host_gw4.vs_baseline.ratio == pytest.approx(0.5) and host_gw4.vs_ipv4 is None
    assert summary.find(figures, "cni-ref-bridge", "tcp-1", "gbps", "ipv6") is None


def test_report_rows_ipv6_beside_ipv4_with_ratios_and_skips():
    text = report.render(dual_document())
    ratios = text.split("## Ratios to the veth baseline")[1].split("##")[0]
    rows = [line.split(" | ")[0].lstrip("| ") for line in ratios.splitlines()
            if line.startswith("| ") and not line.startswith(("| mode", "| ---"))]
    assert rows == ["veth", "veth IPv6", "host-gw", "host-gw IPv6", "cni-ref-bridge"]
    assert "| veth IPv6 | 8.00 |" in ratios
    assert "| host-gw IPv6 | 0.75x* [" in ratios and "| skipped |" in ratios
    family = text.split("## IPv6 / IPv4 per mode")[1].split("##")[0]
    assert "| veth | 0.80x* [" in family and "| host-gw | 1.20x* [" in family
    assert "| cni-ref-bridge | skipped: IPv6 not supported by this mode yet |" in family
    modes_table = text.split("## Modes")[1].split("##")[0]
    assert "| cni-ref-bridge IPv6 | skipped: IPv6 not supported by this mode yet |" \
        in modes_table
    assert "| host-gw IPv6 | ok; skipped: lat: sockperf 3.7 cannot use IPv6" in modes_table
    assert "Address families: ipv4, ipv6" in text


def test_ipv4_only_report_has_no_family_rows():
    doc = dual_document()
    doc["definition"]["families"] = ["ipv4"]
    text = report.render(doc)
    assert "IPv6" not in text and "## IPv6 / IPv4" not in text


def test_version_1_files_still_load_as_ipv4(tmp_path):
    data = json.loads((DATA / "results_quick.json").read_text())
    assert data["version"] == 1
    loaded = results.load(str(DATA / "results_quick.json"))
    assert results.families(loaded) == ["ipv4"]
    assert {s["family"] for s in loaded["samples"]} == {"ipv4"}
    assert "veth" in report.render(loaded)
    data["version"] = 3
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(results.ResultsError, match="reads versions 1, 2"):
        results.load(str(tmp_path))


def test_result_file_records_the_family_of_each_sample(tmp_path):
    live = results.ResultFile(str(tmp_path), definition.loads(BASE).to_dict(), {})
    live.add_sample(results.Sample(mode="veth", test="tcp-1", kind="tcp", round=0,
                                   warmup=False, order=0, started=0, wall_s=1, ok=True,
                                   family="ipv6"))
    loaded = results.load(str(tmp_path))
    assert loaded["version"] == 2 and loaded["samples"][0]["family"] == "ipv6"
    assert loaded["definition"]["families"] == ["ipv4", "ipv6"]


def test_compare_and_plots_keep_families_apart(tmp_path):
    doc = dual_document()
    rows = compare.rows(doc, doc)
    assert {(r.mode, r.family) for r in rows} == {
        ("veth", "ipv4"), ("veth", "ipv6"), ("host-gw", "ipv4"), ("host-gw", "ipv6"),
        ("cni-ref-bridge", "ipv4")}
    assert all(r.comparison.ratio == pytest.approx(1.0) for r in rows)
    assert "| host-gw IPv6 | tcp-1 |" in compare.render(doc, doc)
    labels, series = plots._series(summary.figures(doc), ("tcp",), ("gbps",))
    assert labels == ["veth", "veth IPv6", "host-gw", "host-gw IPv6", "cni-ref-bridge"]
    assert series["tcp-1"]["host-gw IPv6"].estimate.median == pytest.approx(6.0, rel=0.02)
    assert plots.write_all(summary.figures(doc), str(tmp_path)) == ["throughput.png"]
