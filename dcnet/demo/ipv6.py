"""The IPv6 steps of ``dcnet-demo`` for the ELB targets, each in a dual-stack lab of its
own: LVS carrier routing, HAProxy and nftables (the CNI and DNS steps show their IPv6 part
in their own modules; IPVS over IPv6 runs in the kernel lab's tests, this kernel has none).

LVS: :mod:`dcnet.lab.lvs_lab` built dual stack; elbctl's routing for the dual-stack model
is applied to the director (a second plan is empty) and each carrier's client pings its
line's IPv6 VIP: the replies are counted at that carrier's router only.

HAProxy: :mod:`dcnet.lab.haproxy6_lab` (two carriers' clients, a director holding each
carrier's IPv6 VIP, IPv6 real servers); each carrier's client fetches through its own IPv6
VIP, is balanced over both servers, and its IPv6 address arrives in X-Forwarded-For.

nftables: :mod:`dcnet.lab.nft6_lab`; ``elbctl``'s nft target applies a model with an IPv6
and an IPv4 VIP to the director (``table inet dcnet``), the client reaches both, and a
second apply writes nothing.
"""

from __future__ import annotations

import collections
import shutil
import tempfile
import time

from dcnet.haproxy.paths import Paths
from dcnet.lab import haproxy6_lab as h6
from dcnet.lab import haproxy_lab as hlab
from dcnet.lab import nft6_lab as n6
from dcnet.lab.builder import Lab


def demo(model, lab, report) -> None:
    """The demo hook: ``model`` and ``lab`` (the ELB lab) are not used."""
    _lvs_routing(report)
    _haproxy(report)
    _nft(report)


def _lvs_routing(report) -> None:
    """elbctl's carrier policy routing for a dual-stack model in a director namespace
    (no IPVS needed): ``ip -6 rule`` per IPv6 VIP, a default route per family in each
    carrier's table; each carrier's client pings its line's IPv6 VIP and the replies
    are counted at that carrier's router only."""
    from dcnet.demo.lvs import routing_plan
    from dcnet.lab import lvs_lab
    from dcnet.lvs.routing import Routing

    report.section("LVS carrier routing over IPv6: ip -6 rule per VIP, replies by the "
                   "VIP's own carrier")
    topo = lvs_lab.topology("busybox", "/nonexistent", ipv6=True)
    topo["processes"] = []
    topo["bridges"].append({"name": "elb0", "host": "director"})   # elbctl's VIP link
    carriers = tuple(lvs_lab.UPLINKS)
    with Lab(topo) as lab6:
        the_model = lvs_lab.model(ipv6=True)
        routing = Routing(the_model.lvs, netns=lab6.netns("director"))
        try:
            first = routing_plan(routing, the_model)
            for change in first.changes:
                routing.apply(change)
            again = routing_plan(routing, the_model)
            report.check(again.empty, f"{len(first.changes)} routing change(s) applied; "
                                      "a second plan is empty")
            rules = lab6.run("director", ["ip", "-6", "rule", "show"]).stdout
            for line in rules.splitlines():
                if "lookup 10" in line:
                    print(f"    director: ip -6 rule {line.strip()}")
            vips = [v for c in carriers for v in (*lvs_lab.VIPS6[c],)]
            for carrier in carriers:
                lab6.run(f"isp-{carrier}", ["nft", "-f", "-"],
                         input=lvs_lab.observe_script(vips, family="inet"))
            for carrier in carriers:
                vip6 = lvs_lab.VIPS6[carrier][0]
                ok = lab6.run(f"cli-{carrier}", ["ping", "-6", "-n", "-q", "-c", "3", "-i",
                                                 "0.2", "-W", "2", vip6],
                              check=False, timeout=60).returncode == 0
                counts = {c: lvs_lab.counters(lab6.run(
                    f"isp-{c}", ["nft", "list", "table", "inet", "obs"]).stdout).get(vip6, 0)
                    for c in carriers}
                others = sum(n for c, n in counts.items() if c != carrier)
                report.check(ok and counts[carrier] >= 3 and others == 0,
                             f"cli-{carrier} pings {vip6}: replies at {carrier}'s router "
                             f"{counts[carrier]}, at the other's {others}")
        finally:
            routing.close()


def _haproxy(report) -> None:
    report.section("HAProxy over IPv6: each carrier's client through its IPv6 VIP")
    root = tempfile.mkdtemp(prefix="dcnet-demo-hap6-")
    try:
        with Lab(h6.topology(2)) as lab6:
            data = h6.model_data([1, 2])
            hlab.start_haproxy(lab6, hlab.model_of(data), Paths(run_dir=f"{root}/run"))
            servers = {h6.server6(1), h6.server6(2)}
            for carrier, (host, *_rest) in h6.CLIENTS.items():
                deadline = time.monotonic() + 20     # until both servers pass a check
                while True:
                    got = [lab6.call(host, h6.get, h6.VIP6[carrier], 80).split()
                           for _ in range(6)]
                    seen = {server for _ok, server, _xff in got}
                    if seen == servers or time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
                xff = {x.removeprefix("xff=") for _ok, _server, x in got}
                report.check(seen == servers and xff == {h6.client_address(carrier)},
                             f"{carrier}: {h6.client_address(carrier)} -> "
                             f"[{h6.VIP6[carrier]}]:80 answered by {', '.join(sorted(seen))}"
                             f"; X-Forwarded-For {', '.join(sorted(xff))}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _nft(report) -> None:
    from dcnet.nft import synth
    from dcnet.target import session

    report.section("nftables target over IPv6: table inet dcnet, an IPv6 and an IPv4 VIP")
    root = tempfile.mkdtemp(prefix="dcnet-demo-nft6-")
    try:
        with Lab(n6.topology()) as lab6:
            lab6.run("director", ["ip", "-6", "addr", "add", f"{n6.VIP6}/128", "dev", "lo",
                                  "nodad"])
            lab6.run("director", ["ip", "addr", "add", f"{n6.VIP4}/32", "dev", "lo"])
            options = {"netns": lab6.netns("director"), "state_dir": f"{root}/state"}
            text = synth.lab_model_text(n6.VIP6, dict.fromkeys(n6.RS6[:2], 1),
                                        more=((n6.VIP4, dict.fromkeys(n6.RS4[:2], 1)),),
                                        port=80, target_port=n6.PORT)
            the_model = synth.model(text)
            first = session.run("nft", the_model, options, apply=True)
            report.check(first.ok, f"elbctl apply --target nft: {len(first.plan.changes)} "
                                   "change(s) in one nft transaction")
            for vip, servers in ((n6.VIP6, n6.RS6[:2]), (n6.VIP4, n6.RS4[:2])):
                shown = f"[{vip}]" if ":" in vip else vip
                hits = collections.Counter(
                    lab6.call("client", h6.get, vip, 80).split()[1] for _ in range(8))
                report.check(set(hits) == set(servers),
                             f"client -> {shown}:80 DNAT to "
                             + ", ".join(f"{s} x{n}" for s, n in sorted(hits.items())))
            again = session.run("nft", the_model, options, apply=True)
            report.check(again.ok and again.plan.empty, "a second apply writes nothing")
    finally:
        shutil.rmtree(root, ignore_errors=True)
