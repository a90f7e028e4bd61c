"""IPv6 VIPs on the real IPVS, in the kernel lab (issue #21; one module, one guest boot,
one traffic lab, no Python process per server).

The LVS lab built dual stack (:func:`dcnet.lab.lvs_lab.topology` with ``ipv6=True``):
``elbctl apply`` of the dual-stack model programs an IPv6 NAT service per carrier with
the three IPv6 real servers (and the IPv4 ones beside it, each VIP paired with servers
of its family), the carrier tables' IPv6 default routes and an ``ip -6 rule`` per VIP; a
client of each carrier fetches from its line's IPv6 NAT VIP through the director, every
request answered, and the replies (source: the VIP, after IPVS's reverse NAT and the
``snat_reroute`` re-routing by the carrier rule) arrive at that carrier's router only
(nftables counters in the router namespaces). The director's main IPv6 default goes via
unicom, so telecom's replies reach its router only through elbctl's rule.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections import Counter

import pytest

from dcnet.lab import lvs_lab as lvslab
from dcnet.lab.builder import Lab
from dcnet.lvs.backend import LVSTarget
from dcnet.lvs.routing import Routing
from dcnet.lvs.verify import verify
from dcnet.target import apply_plan, make_plan

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


def test_clients_reach_their_ipv6_vip_and_replies_come_back_by_their_carrier(applied):
    lab, _model, _state_dir = applied
    for carrier in lvslab.UPLINKS:
        vip = lvslab.VIPS6[carrier][0]
        before = {c: _counters(lab, c) for c in lvslab.UPLINKS}
        out = lab.run(f"cli-{carrier}", lvslab.curl_loop(
            f"http://[{vip}]:{lvslab.NAT_PORT}/id", REQUESTS), timeout=600).stdout
        after = {c: _counters(lab, c) for c in lvslab.UPLINKS}
        results = lvslab.parse_curl(out)
        assert Counter(code for code, _ in results) == {"200": REQUESTS}, (carrier, results)
        assert {body for _, body in results} <= {"rs1", "rs2", "rs3"}, results
        for other in lvslab.UPLINKS:
            grew = after[other].get(vip, 0) - before[other].get(vip, 0)
            if other == carrier:
                assert grew >= REQUESTS, f"{vip} replies at {other}'s router: {grew}"
            else:
                assert grew == 0, f"{vip} replies leaked to {other}'s router: {grew}"
