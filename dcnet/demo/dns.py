"""Demo step of carrier-aware DNS: one name, resolved from a client of each carrier.

It renders the model's BIND configuration (checked by named-checkconf), starts named in
a small second lab (host ``dns``, plus ``cli-other``, a client in no carrier's list),
joins each ELB lab client ``cli-<carrier>`` to it by a veth, and has every client
resolve one service from its own carrier address: each must get its carrier's VIP
(or the default line's when the carrier is down or has no VIP), ``cli-other`` the
default. The service is made dual stack for the demo (an IPv6 VIP on telecom and on the
default line), and every client also asks for AAAA: telecom gets its own IPv6 VIP, the
IPv4-only lines and ``cli-other`` the default line's. The veths vanish with the second
lab's namespace.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tempfile

import click

from dcnet.dns.bind import Rndc
from dcnet.dns.layout import answer
from dcnet.dns.output import render_to_directory
from dcnet.dns.render import ServerOptions
from dcnet.lab.builder import Lab
from dcnet.lab.dns_lab import dig, make_rndc_key, start_named

LINK_NET = ipaddress.ip_network("10.53.0.0/16")   # /30 per client link
OTHER = ("10.53.255.1", "10.53.255.2")             # dns, cli-other


def dns_topology() -> dict:
    return {"hosts": ["dns", "cli-other"],
            "links": [{"a": {"host": "dns", "ifname": "to-other",
                             "addresses": [f"{OTHER[0]}/30"]},
                       "b": {"host": "cli-other", "ifname": "eth0",
                             "addresses": [f"{OTHER[1]}/30"]}}]}


def _link_addresses(index: int) -> tuple[str, str]:
    net = list(LINK_NET.subnets(new_prefix=30))[index]
    server, client = list(net.hosts())
    return str(server), str(client)


def connect_client(elb_lab: Lab, client: str, dns_lab: Lab, index: int) -> str:
    """A veth from ``client`` (ELB lab) to host ``dns``; returns the server's address.
    The dns host routes the client's own address back over that veth."""
    server, client_link = _link_addresses(index)
    peer = f"to-c{index}"
    ipr = elb_lab.iproute(client)
    ipr.link("add", ifname="dns0", kind="veth",
             peer={"ifname": peer, "net_ns_fd": dns_lab.netns("dns")})
    for handle, ifname, address in ((ipr, "dns0", client_link),
                                    (dns_lab.iproute("dns"), peer, server)):
        idx = handle.link_lookup(ifname=ifname)[0]
        handle.addr("add", index=idx, address=address, prefixlen=30)
        handle.link("set", index=idx, state="up")
    source = elb_lab.address(client, "eth0")
    dns_ipr = dns_lab.iproute("dns")
    dns_ipr.route("add", dst=f"{source}/32", gateway=client_link)
    return server


DEMO_VIP6 = {"telecom": "2001:db8:10::10"}    # plus the default line's (below)
DEFAULT_VIP6 = "2001:db8:30::10"


def dual_stack(model):
    """The model with IPv6 VIPs for its first service: on telecom (when the model has it)
    and on the default line, so every view has an AAAA answer by the rule of docs/dns.md
    (own IPv6 VIP, else the default line's)."""
    first = model.services[0]
    carriers = {c.name for c in model.carriers}
    extra = tuple((c, ipaddress.ip_address(v)) for c, v in DEMO_VIP6.items() if c in carriers)
    extra += ((model.default_carrier.name, ipaddress.ip_address(DEFAULT_VIP6)),)
    return dataclasses.replace(model, services=(
        dataclasses.replace(first, vips=first.vips + extra), *model.services[1:]))


def demo(model, lab: Lab, report) -> None:
    model = dual_stack(model)
    service = model.services[0]
    name = model.dns.name(service.job)
    clients = [c for c in model.carriers if f"cli-{c.name}" in lab.topology.host_names()]
    report.section(f"Carrier-aware DNS: {name} from a client of each carrier")
    with tempfile.TemporaryDirectory(prefix="dcnet-demo-dns-") as bind_dir, \
            Lab(dns_topology()) as dns_lab:
        options = ServerOptions(bind_dir, key_file=make_rndc_key(bind_dir))
        written = render_to_directory(model, options)
        views = ", ".join(v.name for v in written.bundle.layout.views)
        click.echo(f"  rendered and checked {len(written.bundle.zone_files)} zone file(s); "
                   f"views: {views}")
        rndc = Rndc(options.key_file, netns=dns_lab.netns("dns"))
        start_named(dns_lab, "dns", bind_dir, rndc)
        queries = []
        for index, carrier in enumerate(clients):
            client = f"cli-{carrier.name}"
            server = connect_client(lab, client, dns_lab, index)
            queries.append((lab, client, server, lab.address(client, "eth0"),
                            answer(service, carrier, model)))
        queries.append((dns_lab, "cli-other", OTHER[0], OTHER[1],
                        service.vip(model.default_carrier.name)))
        for where, client, server, source, expected in queries:
            got = dig(where, client, server, name, source=source)
            report.check(got == [str(expected)],
                         f"{client:<12} from {source:<12} -> {' '.join(got) or 'no answer'}"
                         f" (expected {expected})")
        click.echo("  AAAA (IPv6): a carrier's own IPv6 VIP, else the default line's")
        for where, client, server, source, _ in queries:
            expected = DEMO_VIP6.get(client.removeprefix("cli-"), DEFAULT_VIP6)
            got = dig(where, client, server, name, "AAAA", source=source)
            report.check(got == [expected],
                         f"{client:<12} AAAA -> {' '.join(got) or 'no answer'}"
                         f" (expected {expected})")
