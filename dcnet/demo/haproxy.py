"""The HAProxy demo step: the model's services served by HAProxy in the ELB lab's
director, then a real server added and drained live, without a reload.

The VIPs go on the director's loopback (removed at the end); each carrier's
router, on-link with its VIPs, is the client. The lab's plain HTTP servers answer no
``/healthz``, so health checks run as TCP checks here.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
import time
from ipaddress import ip_address

from dcnet.haproxy.backend import HAProxyTarget
from dcnet.haproxy.daemon import wait_ready, write_initial
from dcnet.haproxy.layout import listeners
from dcnet.haproxy.paths import Paths
from dcnet.lab.elb_lab import DIRECTOR, real_server_hosts
from dcnet.lab.haproxy_loadgen import one_request
from dcnet.model import CheckType, Model, RealServer
from dcnet.sysio import proc
from dcnet.target import apply_plan


def demo_model(model: Model) -> Model:
    tcp = [dataclasses.replace(s, health_check=dataclasses.replace(
        s.health_check, type=CheckType.TCP, path=None)) for s in model.services]
    return dataclasses.replace(model, services=tuple(tcp),
                               haproxy=dataclasses.replace(model.haproxy, maxconn=2000))


def _add_vips(lab, model: Model) -> list:
    """Put the VIPs on the director's ``lo``; returns those added (to remove later)."""
    ipr = lab.iproute(DIRECTOR)
    index = ipr.link_lookup(ifname="lo")[0]
    have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index)}
    added = []
    for service in model.services:
        for _, vip in service.vips:
            if str(vip) not in have:
                bits = 32 if vip.version == 4 else 128
                ipr.addr("add", index=index, address=str(vip), prefixlen=bits)
                added.append((str(vip), bits))
    return added


def _remove_vips(lab, added: list) -> None:
    ipr = lab.iproute(DIRECTOR)
    index = ipr.link_lookup(ifname="lo")[0]
    for address, bits in added:
        ipr.addr("del", index=index, address=address, prefixlen=bits)


def _client_for(model: Model, vip) -> str:
    carrier = next(c for c in model.carriers if c.owns_vip(vip))
    return f"isp-{carrier.name}"


def _served(lab, model: Model, report) -> None:
    for item in listeners(model):
        for _, vip in item.service.vips:
            client = _client_for(model, vip)
            failure = lab.call(client, one_request, str(vip), item.port.port, 3.0)
            report.check(failure is None, f"{client} -> {vip}:{item.port.port} "
                         f"({item.service.job.tags()['service']}) via HAProxy"
                         + (f": {failure}" if failure else ""))


def _sessions(backend: HAProxyTarget, name: str, slot: str) -> int:
    for line in backend.runtime.command("show stat").splitlines():
        fields = line.split(",")
        if len(fields) > 7 and fields[0] == name and fields[1] == slot:
            return int(fields[7])          # stot: total sessions
    return -1


def demo(model: Model, lab, report) -> None:
    report.section("HAProxy: the same services, on the director (cloud-cluster ELB)")
    model = demo_model(model)
    run_dir = tempfile.mkdtemp(prefix="dcnet-demo-haproxy-")
    paths = Paths(run_dir=run_dir)
    popen, added = None, []
    try:
        added = _add_vips(lab, model)
        write_initial(model, paths)
        popen = lab.start(DIRECTOR, paths.master_argv(), name="haproxy-demo")
        wait_ready(paths, popen)
        backend = HAProxyTarget(run_dir=paths.run_dir, log=lambda text: print(f"  {text}"))
        _served(lab, model, report)
        _add_and_drain(model, lab, backend, report)
    except Exception as exc:      # a demo step reports and lets the others run
        report.check(False, f"HAProxy demo stopped: {exc}")
    finally:
        if popen is not None:
            proc.stop(popen, 3.0)
        try:
            _remove_vips(lab, added)
        except Exception as exc:
            print(f"  could not remove the VIPs from lo: {exc}", file=sys.stderr)
        shutil.rmtree(run_dir, ignore_errors=True)


def _add_and_drain(model: Model, lab, backend: HAProxyTarget, report) -> None:
    item = listeners(model)[0]
    service, port = item.service, item.port
    hosts = real_server_hosts(model)
    spare = next(h for h in hosts if all(str(r.address) != h.address
                                         for r in service.real_servers))
    for p in sorted({service.server_port(RealServer(spare.address), p) for p in
                     service.ports}):
        lab.start(spare.host, [sys.executable, "-m", "dcnet.lab.haproxy_lab", str(p),
                               spare.address], name=f"haproxy-demo-{spare.host}-{p}")
    added = dataclasses.replace(service, real_servers=(
        *service.real_servers, RealServer(address=ip_address(spare.address), weight=50)))
    grown = _with_service(model, added)
    reloads = backend.runtime.proc().reloads
    plan = backend.plan(grown)
    print(f"  plan: {plan.notes[0]}")
    for line in plan.to_text().splitlines()[1:]:
        print(f"  {line}")
    report.check(apply_plan(backend, plan).ok, f"added {spare.address} to "
                 f"{service.job.tags()['service']} live ({plan.notes[0]})")
    slot = _slot_of(backend, item.name, spare.address)
    waited = _wait_until_up(backend, item.name, slot)
    report.check(waited is not None, f"{spare.address} ({slot}) passed its health checks"
                 + (f" after {waited:.1f}s" if waited is not None else " (not within 30s)"))
    vip = service.vips[0][1]
    client = _client_for(model, vip)
    # roundrobin gives a server added live its first turn where the running cycle lets
    # it (0 of the first 20 was seen once, 5 of 20 the next time): 20 requests, then up
    # to 100 until it has taken one
    sent, served = 0, 0
    while sent < 20 or (served <= 0 and sent < 100):
        lab.call(client, one_request, str(vip), port.port, 3.0)
        sent += 1
        if sent >= 20:
            served = _sessions(backend, item.name, slot)
    report.check(served > 0, f"{spare.address} ({slot}) took {served} of {sent} new "
                 "connections")
    drained = _with_service(grown, dataclasses.replace(added, real_servers=tuple(
        dataclasses.replace(r, weight=0) if str(r.address) == spare.address else r
        for r in added.real_servers)))
    plan = backend.plan(drained)
    report.check(apply_plan(backend, plan).ok, f"drained {spare.address} live "
                 f"({plan.notes[0]})")
    before = _sessions(backend, item.name, slot)
    ok = sum(lab.call(client, one_request, str(vip), port.port, 3.0) is None
             for _ in range(20))
    after = _sessions(backend, item.name, slot)
    report.check(ok == 20 and after == before, f"20/20 requests answered after the drain "
                 f"({ok} ok), none sent to the drained server ({after - before})")
    report.check(backend.runtime.proc().reloads == reloads, "no reload for any of it")
    report.check(backend.plan(drained).empty, "running HAProxy equals the model")


def _with_service(model: Model, service) -> Model:
    return dataclasses.replace(model, services=tuple(
        service if s.name == service.name else s for s in model.services))




def _wait_until_up(backend: HAProxyTarget, name: str, slot: str,
                   deadline: float = 30.0) -> float | None:
    """Seconds until a server just added is UP after a passed health check (``show
    stat``: status ``UP`` and a check status ``L4OK``/``L6OK``/``L7OK``; its op state in
    ``show servers state`` can read running before its first check, and HAProxy sends it
    nothing until then), or None when not within ``deadline``."""
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        row = _stat_row(backend, name, slot)
        if row.get("status") == "UP" and row.get("check_status", "").startswith("L"):
            return time.monotonic() - started
        time.sleep(0.2)
    return None


def _stat_row(backend: HAProxyTarget, name: str, slot: str) -> dict[str, str]:
    """The server's ``show stat`` row, by the header's field names ({} when absent)."""
    lines = backend.runtime.command("show stat").splitlines()
    if not lines or not lines[0].startswith("# "):
        return {}
    head = lines[0][2:].split(",")
    for line in lines[1:]:
        fields = line.split(",")
        if len(fields) > 1 and fields[0] == name and fields[1] == slot:
            return dict(zip(head, fields, strict=False))
    return {}


def _slot_of(backend: HAProxyTarget, name: str, address: str) -> str:
    for row in backend.runtime.servers():
        if row.backend == name and row.address == address and not row.free:
            return row.server
    return "?"
