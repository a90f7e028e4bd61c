"""The nft target's DR forwarding (``--nft-dr``) on this kernel, in namespaces.

A classic DR LAN: the carrier gateway ``gw`` has the client behind it, the director on
its carrier segment (uplink ``ctc0``, the VIP on ``lo``) and a leg on the servers' LAN;
the director reaches the real servers on ``rs0``. The real servers are set up by what
``elbctl render realserver --via telecom=10.20.0.254`` prints (VIP on ``lo``,
arp_ignore=1/arp_announce=2, the carrier table via the gateway's LAN leg), so their
replies go straight to the gateway. Counters at the director (before anything else in
its prerouting) show that neither requests nor replies reach its IP stack: the requests
are forwarded at ingress, unchanged, the replies never come by.
"""

from __future__ import annotations

import collections
import os

import pytest

from dcnet.lab import lvs_lab as lvslab
from dcnet.lvs import realserver
from dcnet.nft import dr, drhash, synth
from dcnet.nft.nftio import NftError
from dcnet.target import apply_plan, registry, session
from tests.drift_contract import assert_drift_agrees
from tests.netns import nft_lab

pytestmark = pytest.mark.netns

VIP, PORT = "198.51.100.11", lvslab.DR_PORT
SERVERS = {"10.20.0.11": "rs1", "10.20.0.12": "rs2", "10.20.0.13": "rs3"}
GW_LAN = "10.20.0.254"
CLIENT = "192.0.2.2"
URL = f"http://{VIP}:{PORT}/id"


def model(weights: dict[str, int], scheduler: str = "mh"):
    rs = "".join(f"      - {{address: '{a}', weight: {w}}}\n" for a, w in weights.items())
    return synth.model(
        "version: 1\n" + synth.CARRIER % "198.51.100.0/26" + "services:\n"
        f"  - job: {synth.job(0)}\n    vips: {{telecom: '{VIP}'}}\n"
        f"    ports: [{{port: {PORT}, scheduler: {scheduler}, forward: dr}}]\n"
        f"    real_servers:\n{rs}")


def topology(busybox: str, docroot: str) -> dict:
    hosts = [{"name": "director"}, {"name": "rs-sw"}, {"name": "cli"},
             {"name": "gw", "sysctls": {"net.ipv4.ip_forward": 1,
                                        "net.ipv4.conf.all.rp_filter": 0,
                                        "net.ipv4.conf.default.rp_filter": 0}}]
    links = [
        {"a": {"host": "gw", "ifname": "cust0", "addresses": ["192.0.2.1/26"]},
         "b": {"host": "cli", "ifname": "eth0", "addresses": [f"{CLIENT}/26"]}},
        {"a": {"host": "director", "ifname": "ctc0", "addresses": ["198.51.100.2/26"]},
         "b": {"host": "gw", "ifname": "down0", "addresses": ["198.51.100.1/26"]}},
        {"a": {"host": "director", "ifname": "rs0", "addresses": ["10.20.0.1/24"]},
         "b": {"host": "rs-sw", "ifname": "to-director", "bridge": "br0"}},
        {"a": {"host": "gw", "ifname": "lan0", "addresses": [f"{GW_LAN}/24"]},
         "b": {"host": "rs-sw", "ifname": "to-gw", "bridge": "br0"}},
    ]
    processes = []
    for address, host in SERVERS.items():
        hosts.append({"name": host})
        links.append({"a": {"host": host, "ifname": "eth0", "addresses": [f"{address}/24"]},
                      "b": {"host": "rs-sw", "ifname": f"to-{host}", "bridge": "br0"}})
        processes.append({"name": f"{host}-http", "host": host, "ready_tcp_port": PORT,
                          "ready_timeout": 60,
                          "argv": [busybox, "httpd", "-f", "-p", str(PORT), "-h",
                                   f"{docroot}/{host}"]})
    return {"hosts": hosts, "bridges": [{"name": "br0", "host": "rs-sw"}], "links": links,
            "routes": [{"host": "cli", "dst": "default", "via": "192.0.2.1"}],
            "processes": processes}


OBSERVE = (f"add table inet obs\n"
           "add chain inet obs pre { type filter hook prerouting priority -400; }\n"
           f"add rule inet obs pre ip daddr {VIP} counter\n"
           f"add rule inet obs pre ip saddr {VIP} counter\n")


@pytest.fixture
def dr_lab(lab_factory, tmp_path):
    lab, options, _busybox, _docroot = nft_lab.traffic_lab(lab_factory, tmp_path, VIP,
                                                           topology, dr=True)
    for address, host in SERVERS.items():            # elbctl render realserver's script
        script = realserver.render_all(model(dict.fromkeys(SERVERS, 1)), (address,),
                                       (f"telecom={GW_LAN}",))
        lab.run(host, ["sh", "-c", script], check=True)
    for node in ("director", "gw"):
        lab.run(node, ["nft", "-f", "-"], input=OBSERVE, check=True)
    return lab, options


def apply(options, m, **kw):
    outcome = session.run("nft", m, options, apply=True, **kw)
    assert outcome.ok, outcome.result.to_text()
    return outcome


def hits(lab, count: int) -> collections.Counter:
    out = lab.run("cli", lvslab.curl_loop(URL, count), timeout=120).stdout
    answers = lvslab.parse_curl(out)
    assert len(answers) == count
    return collections.Counter(body if code == "200" else f"failed {code}"
                               for code, body in answers)


def flows(lab, ports: range) -> dict[int, str]:
    """One request per client source port: {port: the server that answered}."""
    script = (f"for p in {' '.join(map(str, ports))}; do "
              f"b=$(curl -s -m 3 --local-port $p {URL}) || b=failed; echo \"$p $b\"; done")
    out = lab.run("cli", ["sh", "-c", script], timeout=120).stdout
    return {int(p): body for p, body in (line.split() for line in out.splitlines())}


def observed(lab, node: str) -> tuple[int, int]:
    """(packets to the VIP, packets from the VIP) seen in ``node``'s prerouting."""
    text = lab.run(node, ["nft", "list", "table", "inet", "obs"], check=True).stdout
    to = from_ = 0
    for line in text.splitlines():
        if "counter packets" in line:
            packets = int(line.split("counter packets")[1].split()[0])
            if f"daddr {VIP}" in line:
                to = packets
            elif f"saddr {VIP}" in line:
                from_ = packets
    return to, from_


def test_dr_forwards_at_ingress_and_servers_answer_directly(dr_lab):
    lab, options = dr_lab
    first = apply(options, model(dict.fromkeys(SERVERS, 1)), force=True)
    assert any(c.kind == "drhook" for c in first.plan.changes)
    answered = flows(lab, range(41000, 41030))
    assert set(answered.values()) == set(SERVERS.values()), answered   # spread
    (dr_input,) = dr.inputs(model(dict.fromkeys(SERVERS, 1)))[0].values()
    assert answered == {p: SERVERS[drhash.lookup(dr_input, CLIENT, p)]  # by the table
                        for p in answered}
    assert observed(lab, "director") == (0, 0)      # neither requests nor replies
    to_gw, from_gw = observed(lab, "gw")
    assert to_gw >= 30 * 3 and from_gw >= 30 * 3    # replies came from the LAN, direct
    # (the gateway's prerouting: requests from the client, replies from the servers' LAN)
    rules = lab.run("director", ["nft", "list", "table", "netdev", "dcnet"]).stdout
    assert 'fwd ip to 10.20.0.11 device "rs0"' in rules
    assert "chain in-ctc0" in rules and "hook ingress" in rules

    again = apply(options, model(dict.fromkeys(SERVERS, 1)))
    assert again.plan.empty and not any(again.result.writes.values()), again.plan.to_text()
    assert again.plan.payload.fast_path
    assert_drift_agrees("nft", options, model(dict.fromkeys(SERVERS, 1)), per_piece=1)
    drained = apply(options, model({**dict.fromkeys(SERVERS, 1), "10.20.0.13": 0}))
    assert drained.plan.payload.fast_path
    assert {c.kind for c in drained.plan.changes} == {"drmaglev", "drservice"}
    assert set(hits(lab, 20)) == {"rs1", "rs2"}

    apply(options, model(dict.fromkeys(SERVERS, 1), scheduler="sh"), force=True)
    assert len(hits(lab, 10)) == 1                     # one client: one server
    fresh = registry.create("nft", **options)          # a full read agrees
    os.unlink(fresh.fingerprint_path())
    assert fresh.plan(model(dict.fromkeys(SERVERS, 1), scheduler="sh")).empty


def test_fresh_instance_refusals_and_without_the_option(dr_lab):
    lab, options = dr_lab
    off = {**options, "dr": False}
    plan = registry.create("nft", **off).plan(model(dict.fromkeys(SERVERS, 1)))
    assert not any(c.kind.startswith("dr") for c in plan.changes)
    assert any("rendered only with --nft-dr" in n for n in plan.notes), plan.notes
    with pytest.raises(NftError, match=r"10\.99\.0\.5: no route"):    # not on a link
        registry.create("nft", **options).plan(model({"10.99.0.5": 1, "10.20.0.11": 1}))
    plan = registry.create("nft", **options).plan(model(dict.fromkeys(SERVERS, 1)))
    result = apply_plan(registry.create("nft", **options), plan)   # made by another
    assert result.ok and result.writes["nft_transactions"] == 1
    assert registry.create("nft", **options).plan(model(dict.fromkeys(SERVERS, 1))).empty
    gone = apply(off, model(dict.fromkeys(SERVERS, 1)), force=True)   # option off: removed
    assert ("drtable", ("netdev", "dcnet")) in {(c.kind, c.key) for c in gone.plan.changes}
    listed = lab.run("director", ["nft", "list", "tables"]).stdout
    assert "netdev dcnet" not in listed
