"""IPv6 VIPs on the real IPVS, in the kernel lab (issue #21; one module, one guest boot,
one traffic lab, no Python process per server).

The LVS lab built dual stack (:func:`dcnet.lab.lvs_lab.topology` with ``ipv6=True``):
``elbctl apply`` of the dual-stack model programs IPv6 NAT and DR services per carrier
with the three IPv6 real servers (and the IPv4 ones beside them, each VIP paired with
servers of its family), the carrier tables' IPv6 default routes and an ``ip -6 rule``
per VIP; the real servers get ``elbctl render realserver``'s script. A client of each
carrier fetches from its line's IPv6 NAT and DR VIPs, every request answered, and the
replies (source: the VIP; NAT: after IPVS's reverse NAT and the ``snat_reroute``
re-routing by the carrier rule; DR: from the real servers through the director) arrive
at that carrier's router only (nftables counters in the router namespaces). The
director's main IPv6 default goes via unicom, so telecom's replies reach its router
only through elbctl's rule. keepalived on the rendered dual-stack configuration
programs the same IPVS table as ``elbctl apply``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter

import pytest

from dcnet.lab import lvs_lab as lvslab
from dcnet.lab.builder import Lab
from dcnet.lvs.backend import LVSTarget
from dcnet.lvs.ipvs import KernelIPVS
from dcnet.lvs.keepalived import render
from dcnet.lvs.realserver import render_all
from dcnet.lvs.routing import Routing
from dcnet.lvs.verify import verify
from dcnet.sysio import proc
from dcnet.target import apply_plan, make_plan
from tests.unit.test_lvs_contract import observed

# as tests/kernel/test_lvs.py: pyroute2 leaves some of its own sockets to the garbage
# collector in the guest; their ResourceWarnings (raised in finalizers at an arbitrary
# later test, reported as unraisable-exception warnings) are the only ones ignored
pytestmark = [pytest.mark.kernel, pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

REQUESTS = 12


@pytest.fixture(scope="module")
def applied():
    docroot = tempfile.mkdtemp(prefix="lvs6-lab-www-")
    state_dir = tempfile.mkdtemp(prefix="lvs6-state-")
    lvslab.write_docroots(docroot)
    busybox = shutil.which("busybox") or "/bin/busybox"
    model = lvslab.model(ipv6=True)
    vips = [v for c in lvslab.UPLINKS for v in (*lvslab.VIPS[c], *lvslab.VIPS6[c])]
    try:
        with Lab(lvslab.topology(busybox, docroot, ipv6=True)) as lab:
            ns = lab.netns("director")
            subprocess.run(["ip", "-n", ns, "link", "add", "elb0", "up", "type", "dummy"],
                           check=True)
            for carrier in lvslab.UPLINKS:
                lab.run(f"isp-{carrier}", ["nft", "-f", "-"],
                        input=lvslab.observe_script(vips, family="inet"))
            backend = LVSTarget(netns=ns, state_dir=state_dir)
            with backend.lock(600):
                result = apply_plan(backend, make_plan(backend, model), rollback=False)
            assert result.ok, result.to_text()
            vias = [f"{c}={gw}" for c in lvslab.UPLINKS for gw in ("10.20.0.1", "fd00:20::1")]
            for i, servers in enumerate(zip(lvslab.SERVERS, lvslab.SERVERS6, strict=True), 1):
                lab.run(f"rs{i}", ["sh", "-c", render_all(model, servers=servers, vias=vias)])
            yield lab, model, state_dir
    finally:
        shutil.rmtree(docroot, ignore_errors=True)
        shutil.rmtree(state_dir, ignore_errors=True)


def test_ipv6_services_rules_and_routes_are_programmed(applied):
    lab, model, state_dir = applied
    listing = lab.run("director", ["ipvsadm", "-Ln"]).stdout
    for carrier in lvslab.UPLINKS:
        block = listing.split(f"TCP  [{lvslab.VIPS6[carrier][0]}]:80 wrr")[1].split("TCP ")[0]
        assert all(f"[{rip}]:8080" in block for rip in lvslab.SERVERS6), listing
        assert not any(rip in block for rip in lvslab.SERVERS), listing   # its family only
    rules = lab.run("director", ["ip", "-6", "rule", "show"]).stdout
    assert f"from {lvslab.VIPS6['telecom'][0]} lookup 101" in rules, rules
    routing = Routing(model.lvs, netns=lab.netns("director"))
    try:
        checks = verify(model, routing)
    finally:
        routing.close()
    assert len(checks) == 8 and all(c.ok for c in checks), [c.describe() for c in checks]
    backend = LVSTarget(netns=lab.netns("director"), state_dir=state_dir)
    with backend.lock(600):
        assert make_plan(backend, model).empty


def _counters(lab, carrier: str) -> dict[str, int]:
    return lvslab.counters(lab.run(f"isp-{carrier}", ["nft", "list", "table", "inet",
                                                       "obs"]).stdout)


@pytest.mark.parametrize("mode", ["nat", "dr"])
def test_clients_reach_their_ipv6_vip_and_replies_come_back_by_their_carrier(applied, mode):
    """NAT: replies de-NATed by the director and re-routed by the VIP's rule; DR: the
    real servers answer from the VIP on their ``lo`` (``elbctl render realserver``), by
    their carrier table via the director, which forwards them by the VIP's rule."""
    lab, _model, _state_dir = applied
    index, port = (0, lvslab.NAT_PORT) if mode == "nat" else (1, lvslab.DR_PORT)
    for carrier in lvslab.UPLINKS:
        vip = lvslab.VIPS6[carrier][index]
        before = {c: _counters(lab, c) for c in lvslab.UPLINKS}
        out = lab.run(f"cli-{carrier}", lvslab.curl_loop(
            f"http://[{vip}]:{port}/id", REQUESTS), timeout=600).stdout
        after = {c: _counters(lab, c) for c in lvslab.UPLINKS}
        results = lvslab.parse_curl(out)
        assert Counter(code for code, _ in results) == {"200": REQUESTS}, (mode, carrier,
                                                                          results)
        assert {body for _, body in results} <= {"rs1", "rs2", "rs3"}, results
        for other in lvslab.UPLINKS:
            grew = after[other].get(vip, 0) - before[other].get(vip, 0)
            if other == carrier:
                assert grew >= REQUESTS, f"{mode} {vip} replies at {other}'s router: {grew}"
            else:
                assert grew == 0, f"{mode} {vip} replies leaked to {other}'s router: {grew}"


def test_keepalived_programs_the_same_dual_stack_table_as_elbctl(tmp_path):
    """keepalived on the rendered dual-stack file (a -v6 instance per group, virtual
    servers with the real servers of their VIP's family) and ``elbctl apply`` of the
    same model program equal IPVS tables (IPv4 and IPv6 services)."""
    model = lvslab.model(ipv6=True)
    names = [f"lvs6k-{tag}-{os.getpid()}" for tag in ("el", "ka")]
    keepalived = None
    try:
        for ns in names:
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
            for carrier, ifname in lvslab.UPLINKS.items():
                subprocess.run(["ip", "-n", ns, "link", "add", ifname, "up", "type", "dummy"],
                               check=True)
                for address in (lvslab.DIRECTOR_UPLINK[carrier],
                                lvslab.DIRECTOR_UPLINK6[carrier]):
                    extra = ["nodad"] if ":" in address else []
                    subprocess.run(["ip", "-n", ns, "addr", "add", address, "dev", ifname,
                                    *extra], check=True)
            subprocess.run(["ip", "-n", ns, "link", "add", "elb0", "up", "type", "dummy"],
                           check=True)
        backend = LVSTarget(netns=names[0], state_dir=str(tmp_path / "el"))
        with backend.lock(600):
            result = apply_plan(backend, make_plan(backend, model), rollback=False)
        assert result.ok, result.to_text()
        conf = tmp_path / "keepalived.conf"
        conf.write_text(render(model))
        run_dir = tempfile.mkdtemp(prefix="ka6-")
        keepalived = proc.start(
            ["keepalived", "-n", "-l", "-D", "-f", str(conf), "-p", f"{run_dir}/k.pid",
             "-r", f"{run_dir}/v.pid", "-c", f"{run_dir}/c.pid"],
            netns=names[1], log_path=str(tmp_path / "keepalived.log"))
        want = observed(KernelIPVS(names[0]))
        assert any(":" in key[1] for key in want), want       # IPv6 services are there
        table = KernelIPVS(names[1])
        deadline = time.monotonic() + 120        # bounds the wait only
        got = {}
        while time.monotonic() < deadline:
            got = observed(table)
            if sum(len(d) for _, d in got.values()) >= sum(len(d) for _, d in want.values()):
                break
            time.sleep(0.5)
        assert got == want, (tmp_path / "keepalived.log").read_text()[-2000:]
    finally:
        if keepalived is not None:
            proc.stop(keepalived)
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], check=False)
