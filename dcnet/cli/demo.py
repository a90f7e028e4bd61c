"""``dcnet-demo``: the toolkit end to end on an example model, inside network namespaces.

It validates the model, builds the ELB lab from it (director, carrier routers and
clients, a switch and the real servers, each a namespace), shows what it built, checks
that every part answers, and tears everything down. Later parts of dcnet (LVS, HAProxy,
DNS, CNI) add their own steps here.
"""

from __future__ import annotations

import sys
import time
from importlib import resources

import click

from dcnet.cli.elbctl import describe_model
from dcnet.lab.builder import Lab
from dcnet.lab.elb_lab import DIRECTOR, elb_topology, real_server_hosts
from dcnet.lab.probes import ping, tcp_probe
from dcnet.lab.topology import Topology
from dcnet.model import Model, ModelError, load_model
from dcnet.sysio import netns


def default_model_path() -> str:
    return str(resources.files("dcnet") / "examples" / "elb.yaml")


class Report:
    """Collects check results and prints them as they come; ``store`` tells the steps
    where cluster state lives ("file", the embedded default, or "etcd")."""

    def __init__(self, store: str = "file") -> None:
        self.failures = 0
        self.store = store

    def section(self, title: str) -> None:
        click.echo(f"\n== {title}")

    def check(self, ok: bool, text: str) -> None:
        self.failures += not ok
        click.echo(f"  [{'ok' if ok else 'FAIL'}] {text}")


def show_lab(topology: Topology, lab: Lab) -> None:
    for host in topology.host_names():
        ifaces = [(e.ifname, e.addresses, e.bridge) for e in topology.endpoints()
                  if e.host == host]
        ifaces += [(b.name, b.addresses, None) for b in topology.bridges if b.host == host]
        parts = []
        for name, addresses, bridge in ifaces:
            where = f"@{bridge}" if bridge else ",".join(addresses) or "-"
            parts.append(f"{name} {where}")
        click.echo(f"  {lab.netns(host):<22} {'; '.join(parts)}")


def check_lab(model: Model, topology: Topology, lab: Lab, report: Report) -> None:
    report.section("Carrier uplinks: director -> each carrier gateway")
    for carrier in model.carriers:
        ok = ping(lab, DIRECTOR, str(carrier.gateway))
        report.check(ok, f"{carrier.name:<8} {carrier.uplink} -> {carrier.gateway}")
    report.section("Carrier clients: client -> its carrier router")
    for carrier in model.carriers:
        client = f"cli-{carrier.name}"
        if client in topology.host_names():
            router = lab.address(f"isp-{carrier.name}", "cust0")
            report.check(ping(lab, client, router),
                         f"{client} {lab.address(client, 'eth0')} -> {router}")
    report.section("Real servers: director -> every real-server TCP port")
    for server in real_server_hosts(model):
        for port in server.tcp_ports:
            report.check(tcp_probe(lab, DIRECTOR, server.address, port),
                         f"{server.host} {server.address}:{port} answers")


# Parts of dcnet add their own demo steps through a ``demo(model, lab, report)``
# function in these modules; each runs inside the live ELB lab, in this order.
STEPS: tuple[str, ...] = ("dcnet.demo.dns", "dcnet.demo.haproxy", "dcnet.demo.elbstore",
                          "dcnet.demo.cni", "dcnet.demo.lvs", "dcnet.demo.ipv6",
                          "dcnet.demo.netbench")


def run_steps(model: Model, lab: Lab, report: Report) -> None:
    import importlib

    for name in STEPS:
        importlib.import_module(name).demo(model, lab, report)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-f", "--file", "model_path", type=click.Path(dir_okay=False),
              help="Service model (default: the embedded examples/elb.yaml).")
@click.option("--store", type=click.Choice(["file", "etcd"]), default="file",
              show_default=True,
              help="Where host-gw node leases and the ELB's desired state live: files, or "
                   "a three-member etcd cluster the demo starts in its lab.")
def cli(model_path: str | None, store: str) -> None:
    """Build the dcnet lab from a model and show every part working."""
    model_path = model_path or default_model_path()
    report = Report(store)
    report.section(f"Service model {model_path}")
    try:
        model = load_model(model_path)
    except ModelError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(describe_model(model))
    topology = Topology.from_dict(elb_topology(model))
    report.section(f"Building the ELB lab: {len(topology.hosts)} namespaces, "
                   f"{len(topology.links)} veth links, {len(topology.processes)} servers")
    started = time.monotonic()
    with Lab(topology) as lab:
        click.echo(f"  built in {time.monotonic() - started:.1f}s (prefix {lab.prefix})")
        show_lab(topology, lab)
        check_lab(model, topology, lab, report)
        run_steps(model, lab, report)
        names = lab.netns_names
    report.section("Teardown")
    left = [n for n in names if netns.exists(n)]
    report.check(not left, f"{len(names)} namespaces removed" + (f"; left: {left}" if left else ""))
    click.echo(f"\n{'demo OK' if not report.failures else f'{report.failures} check(s) FAILED'}")
    sys.exit(1 if report.failures else 0)


def main() -> None:
    cli(prog_name="dcnet-demo")


if __name__ == "__main__":
    main()
