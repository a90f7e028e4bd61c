"""Synthetic service models for the nft target's tests and benchmark (pure text).

:func:`model_text` writes a valid model of ``services`` NAT services on one carrier, each
with its own VIP and ``backends`` real servers; :func:`lab_model_text` the three-server
service of the namespace tests, with the scheduler, weights and persistence given.
"""

from __future__ import annotations

import ipaddress

from dcnet.model import parse_model

CARRIER = ("carriers:\n  - {name: telecom, uplink: ctc0, gateway: 198.51.100.1, table: 101,"
           " vip_ranges: [%s], default: true}\n")
# dual stack: IPv4 and IPv6 VIP ranges, an IPv6 next hop too
CARRIER46 = ("carriers:\n  - {name: telecom, uplink: ctc0, gateway: 198.51.100.1, "
             "gateway6: '2001:db8:ff::1', table: 101, vip_ranges: [%s], default: true}\n")


def job(i: int) -> str:
    return f"job.web_service.shop{i}_cluster.prod_pdl.retail_owt.sre_cop.example"


def model_text(services: int, backends: int, *, weight: int = 1, scheduler: str = "wrr",
               persistence: int = 0, changed: int | None = None) -> str:
    """``services`` services on VIPs from 10.128.0.0/12, ``backends`` servers each
    (from 10.64.0.0/12); service ``changed`` (if any) gives its first server
    ``weight + 1``."""
    vips = ipaddress.ip_network("10.128.0.0/12")
    rips = ipaddress.ip_network("10.64.0.0/12")
    lines = ["version: 1\n", CARRIER % vips, "services:\n"]
    for i in range(services):
        lines.append(f"  - job: {job(i)}\n    vips: {{telecom: {vips[i + 1]}}}\n"
                     f"    ports: [{{port: 80, scheduler: {scheduler}, forward: nat, "
                     f"target_port: 8080, persistence: {persistence}}}]\n"
                     "    real_servers:\n")
        lines += [f"      - {{address: {rips[i * backends + j + 1]}, "
                  f"weight: {weight + 1 if i == changed and j == 0 else weight}}}\n"
                  for j in range(backends)]
    return "".join(lines)


def lab_model_text(vip: str, servers: dict[str, int], *, scheduler: str = "wrr",
                   persistence: int = 0, port: int = 80, target_port: int = 8080,
                   more: tuple[tuple[str, dict[str, int]], ...] = ()) -> str:
    """One NAT service on ``vip`` with ``servers`` (address -> weight), and one more per
    ``(vip, servers)`` of ``more`` (same port settings); IPv6 VIPs (or servers) make the
    carrier dual-stack (VIP ranges of both families, ``gateway6``)."""
    services = ((vip, servers), *more)
    nets = []
    for v, _ in services:
        net = ipaddress.ip_network(f"{v}/{26 if ':' not in v else 64}", strict=False)
        if net not in nets:
            nets.append(net)
    dual = any(":" in v or any(":" in a for a in s) for v, s in services)
    ranges = ", ".join(f"'{n}'" for n in nets)
    if dual and not any(n.version == 4 for n in nets):
        ranges += ", 198.51.100.0/26"
    lines = ["version: 1\n", (CARRIER46 if dual else CARRIER) % ranges, "services:\n"]
    for i, (v, servers_i) in enumerate(services):
        rs = "".join(f"      - {{address: '{a}', weight: {w}}}\n" for a, w in servers_i.items())
        lines.append(f"  - job: {job(i)}\n    vips: {{telecom: '{v}'}}\n"
                     f"    ports: [{{port: {port}, scheduler: {scheduler}, forward: nat, "
                     f"target_port: {target_port}, persistence: {persistence}}}]\n"
                     f"    real_servers:\n{rs}")
    return "".join(lines)


def model(text: str, source: str = "nft-synth.yaml"):
    return parse_model(text, source=source)
