"""Demo step of the carrier-aware LVS ELB.

In the ELB lab's director (this kernel, no IPVS needed): elbctl's carrier routing (a
table per carrier with the default via its gateway, ``from VIP lookup <table>`` per VIP,
the VIPs on elbctl's interface) is applied, applied again with zero writes, and checked
by a route lookup per carrier VIP (``elbctl verify``); keepalived.conf is rendered and
passes ``keepalived -t``.

The IPVS part needs IPVS: where this kernel has it, it runs here; otherwise it runs in
ONE short kernel-lab boot (``python -m dcnet.demo.lvs --ipvs``, about 2-4 minutes under
emulation; ``DCNET_DEMO_LVS_KERNEL_LAB=off`` skips it): the LVS lab of
:mod:`dcnet.lab.lvs_lab` is built, ``elbctl apply`` programs it, a re-apply writes nothing,
a client of each carrier fetches a page through the NAT VIP, and the reply is seen
arriving at that carrier's own gateway only.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import click

from dcnet.lab.elb_lab import DIRECTOR
from dcnet.lvs import state
from dcnet.lvs.keepalived import check_config, interfaces, render
from dcnet.lvs.routing import Routing
from dcnet.lvs.verify import verify
from dcnet.plan import Plan, diff

ROUTING_KINDS = ("link", "route", "rule", "vip")


def routing_plan(routing: Routing, model) -> Plan:
    found = routing.read([c.table for c in model.carriers],
                         [str(v) for s in model.services for _, v in s.vips])
    current = {k: v for k, v in found.state.items() if k[0] in ROUTING_KINDS}
    return Plan.build("lvs", diff(current, state.desired_routing(model)), state.KIND_ORDER)


def demo(model, lab, report) -> None:
    report.section("Carrier-aware LVS: elbctl's routing on the director")
    ipr = lab.iproute(DIRECTOR)
    if not ipr.link_lookup(ifname=model.lvs.vip_interface):
        # this kernel may lack dummy devices: a port-less bridge holds the VIPs instead
        ipr.link("add", ifname=model.lvs.vip_interface, kind="bridge")
    routing = Routing(model.lvs, netns=lab.netns(DIRECTOR))
    try:
        plan = routing_plan(routing, model)
        for change in plan.changes:
            routing.apply(change)
        click.echo(f"  applied {len(plan.changes)} routing change(s) "
                   f"({routing.writes} rtnetlink writes)")
        again = routing_plan(routing, model)
        before = routing.writes
        for change in again.changes:
            routing.apply(change)
        report.check(again.empty and routing.writes == before,
                     "second apply: no changes, 0 netlink writes")
        for check in verify(model, routing):
            report.check(check.ok, check.describe()[5:])
    finally:
        routing.close()
    try:
        check_config(render(model), interfaces(model))
        report.check(True, "keepalived.conf rendered; keepalived -t accepts it")
    except Exception as exc:  # reported as a failed check
        report.check(False, f"keepalived.conf: {exc}")
    _ipvs_part(report)


def _ipvs_part(report) -> None:
    from dcnet.lab import kernel_lab

    if kernel_lab.host_has_modules(["ip_vs"]):
        report.section("Carrier-aware LVS: IPVS on this kernel")
        report.check(run_ipvs_demo() == 0, "IPVS demo (see above)")
        return
    if os.environ.get("DCNET_DEMO_LVS_KERNEL_LAB", "").lower() in ("off", "0", "no"):
        click.echo("  (IPVS part skipped: this kernel has no IPVS and "
                   "DCNET_DEMO_LVS_KERNEL_LAB=off)")
        return
    report.section("Carrier-aware LVS: IPVS in the kernel lab (this kernel has none; "
                   "one short guest boot)")
    out = tempfile.mkdtemp(prefix="dcnet-demo-lvs-")
    try:
        run = kernel_lab.run_in_guest(
            [sys.executable, "-m", "dcnet.demo.lvs", "--ipvs"], rwdirs=[out], timeout=900,
            env={"PYTHONUNBUFFERED": "1", "HOME": "/root",
                 "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        for line in run.log_tail(60).splitlines():
            if line.startswith(("  ", "lvs")):
                click.echo(line)
        report.check(run.ok, f"kernel lab run ({run.seconds:.0f}s wall, kernel "
                             f"{run.kernel.name})")
    except kernel_lab.KernelLabError as exc:
        report.check(False, f"kernel lab: {str(exc).splitlines()[0]}")
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _writes_line(result) -> str:
    return next((line for line in result.to_text().splitlines()
                 if line.startswith("writes:")), "writes: none")


def run_ipvs_demo() -> int:
    """The IPVS half (run where IPVS exists): returns the number of failed checks."""
    from dcnet.lab import lvs_lab as lvslab
    from dcnet.lab.builder import Lab
    from dcnet.target import session

    failures = 0

    def check(ok: bool, text: str) -> None:
        nonlocal failures
        failures += not ok
        print(f"  [{'ok' if ok else 'FAIL'}] {text}", flush=True)

    model = lvslab.model()
    docroot = tempfile.mkdtemp(prefix="lvs-demo-www-")
    state_dir = tempfile.mkdtemp(prefix="lvs-demo-state-")
    lvslab.write_docroots(docroot)
    busybox = shutil.which("busybox") or "/bin/busybox"
    with Lab(lvslab.topology(busybox, docroot)) as lab:
        ns = lab.netns("director")
        ipr = lab.iproute("director")
        ipr.link("add", ifname="elb0", kind="dummy")
        vips = [v for vs in lvslab.VIPS.values() for v in vs]
        for carrier in lvslab.UPLINKS:
            lab.run(f"isp-{carrier}", ["nft", "-f", "-"], input=lvslab.observe_script(vips))
        options = {"netns": ns, "state_dir": state_dir}
        first = session.run("lvs", model, options, apply=True)
        print(f"  {first.plan.summary()}", flush=True)
        check(first.ok, f"elbctl apply: {len(first.result.applied)} change(s); "
                        + _writes_line(first.result))
        second = session.run("lvs", model, options, apply=True)
        check(second.ok and second.result.writes["netlink"] == 0,
              "re-apply: " + _writes_line(second.result))
        print("  " + lab.run("director", ["ipvsadm", "-Ln"]).stdout.replace("\n", "\n  "))
        for carrier in lvslab.UPLINKS:
            vip = lvslab.VIPS[carrier][0]
            out = lab.run(f"cli-{carrier}", lvslab.curl_loop(f"http://{vip}/id", 3)).stdout
            answers = lvslab.parse_curl(out)
            seen = {c: lvslab.counters(lab.run(f"isp-{c}", ["nft", "list", "table", "ip",
                                                            "obs"]).stdout).get(vip, 0)
                    for c in lvslab.UPLINKS}
            check(all(code == "200" for code, _ in answers),
                  f"cli-{carrier} -> {vip}:80 (NAT): {' '.join(b for _, b in answers)}")
            check(seen[carrier] > 0 and all(n == 0 for c, n in seen.items() if c != carrier),
                  f"replies from {vip} seen at gateways: {seen}")
    shutil.rmtree(docroot, ignore_errors=True)
    shutil.rmtree(state_dir, ignore_errors=True)
    return failures


if __name__ == "__main__":
    if "--ipvs" in sys.argv:
        sys.exit(1 if run_ipvs_demo() else 0)
