"""``elbctl render dns``: the DNS target's own command.

``elbctl render dns -f MODEL -o DIR`` checks the carrier lists, renders named.conf and
the zone files into DIR (serials continue from what DIR already holds), checks them
with named-checkzone and named-checkconf -z, and only then writes them (each atomically).
``elbctl plan|apply --target dns`` are elbctl's own (options declared by
:class:`dcnet.dns.backend.DNSTarget`).
``elbctl dns follow -f MODEL --haproxy SOCKET[=CARRIER,...] --ipvs[=NETNS] --etcd URL``
is the health loop of :mod:`dcnet.dns.follow` (``--once``: one round).
Exit codes as elbctl's: 1 for refused input or a failed check, 3 when named is down.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import click

from dcnet.cli.common import load_model_or_exit
from dcnet.dns import bind
from dcnet.dns.backend import DNSTarget
from dcnet.dns.output import render_to_directory
from dcnet.dns.settings import from_env
from dcnet.target import TargetError, TargetUnavailable

EXIT_INVALID, EXIT_UNAVAILABLE = 1, 3
DNS_ERRORS = (*DNSTarget.refused_errors, TargetError)


def fail(exc: Exception) -> None:
    code = (EXIT_UNAVAILABLE if isinstance(exc, bind.NamedDown | TargetUnavailable)
            else EXIT_INVALID)
    click.echo(f"elbctl: dns: {exc}", err=True)
    sys.exit(code)


def register(cli: click.Group, render_group: click.Group) -> None:
    render_group.add_command(render_dns)
    cli.add_command(dns_group)


@click.command("dns")
@click.option("-f", "--file", "model_path", required=True, type=click.Path(dir_okay=False),
              help="The service model (YAML).")
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False),
              help="Directory for named.conf and the zone files.")
@click.option("--force", is_flag=True, help="Allow a carrier list to change more than 30% "
              "of the prefixes DIR's named.conf holds.")
@click.option("--no-check", is_flag=True, help="Skip named-checkzone / named-checkconf.")
@click.option("--rndc-key", type=click.Path(dir_okay=False),
              help="rndc key file to include (default DIR/rndc.key when it exists; "
                   "without one named.conf has no control channel).")
def render_dns(model_path: str, output_dir: str, force: bool, no_check: bool,
               rndc_key: str | None) -> None:
    """Render BIND named.conf (an ACL and a view per carrier) and zone files."""

    model = load_model_or_exit(model_path)
    settings = from_env(directory=output_dir, key_file=rndc_key)
    server = settings.server
    if rndc_key is None and not os.path.exists(server.key_file or ""):
        server = dataclasses.replace(server, key_file=None)
    try:
        # the dns target's lock: never interleaved with an apply into the same directory
        with DNSTarget(directory=settings.directory).lock(timeout=600):
            written = render_to_directory(model, server, force=force, check=not no_check)
    except DNS_ERRORS as exc:
        fail(exc)
    bundle = written.bundle
    for change in written.forced:
        click.echo(f"forced: {change}", err=True)
    for note in bundle.layout.notes:
        click.echo(f"note: {note}")
    for decl in bundle.layout.zones:
        where = (f"{decl.file} serial {bundle.serials[decl.key]}" if decl.file
                 else f"shared from view {decl.in_view}")
        click.echo(f"view {decl.view}: zone {decl.zone}: {len(decl.data.records)} names, "
                   f"{where}")
    click.echo(f"wrote {len(bundle.zone_files) + 1} file(s) to {settings.directory}"
               + ("" if no_check else " (checked by named-checkzone and named-checkconf -z)"))


@click.group("dns")
def dns_group() -> None:
    """DNS that follows the health of the VIPs."""


def with_dns_options(command):
    """The dns target's own flags (--dns-dir, --dns-rndc-key, ...)."""
    for opt in reversed(DNSTarget.options):
        if opt.flag:
            command = click.option(f"--{opt.flag}", opt.name, type=opt.type, default=None,
                                   help=f"{opt.help} (default ${opt.envvar})")(command)
    return command


def split_scope(text: str) -> tuple[str, tuple[str, ...] | None]:
    """``WHAT=CARRIER,CARRIER`` -> (WHAT, carriers); no ``=``: every carrier."""
    what, sep, carriers = text.partition("=")
    return what, (tuple(c for c in carriers.split(",") if c) if sep else None)


@dns_group.command("follow")
@click.option("-f", "--file", "model_path", required=True, type=click.Path(dir_okay=False),
              help="The service model (YAML); reloaded when the file changes.")
@click.option("--haproxy", "haproxy", multiple=True, metavar="SOCKET[=CARRIER,...]",
              help="A HAProxy admin socket to read server states from (only the VIPs of "
                   "the listed carriers: e.g. the HAProxy of one carrier's directors).")
@click.option("--ipvs", is_flag=True, help="Read this host's IPVS table.")
@click.option("--ipvs-netns", multiple=True, metavar="NETNS",
              help="Read the IPVS table of this network namespace.")
@click.option("--etcd", "etcd", multiple=True, metavar="URL[=CARRIER,...]",
              help="Read the backends registered in etcd (store URL).")
@click.option("--interval", type=click.FloatRange(0.05), default=2.0, show_default=True,
              help="Seconds between polls.")
@click.option("--resync", type=click.FloatRange(0), default=60.0, show_default=True,
              help="Plan (and repair drift) at least this often, in seconds.")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help="Damping state (default <dns dir>/.dcnet-health).")
@click.option("--once", is_flag=True, help="One round, then exit.")
@click.option("--metrics-address", default=None, envvar="DCNET_DNS_METRICS_ADDRESS",
              help="Serve Prometheus metrics (answers withdrawn, rounds, applies, zone "
                   "serials) on HOST:PORT, [V6]:PORT or :PORT (default: none).")
@click.option("--force", is_flag=True, help="Apply plans above --max-change too.")
@click.option("--max-change", type=click.FloatRange(0, 1), default=None,
              help="Largest share of DNS objects one apply may change (default 0.3).")
@with_dns_options
def follow_cmd(model_path: str, haproxy: tuple[str, ...], ipvs: bool,
               ipvs_netns: tuple[str, ...], etcd: tuple[str, ...], interval: float,
               resync: float, state_dir: str | None,
               once: bool, metrics_address: str | None, force: bool,
               max_change: float | None, **options) -> None:
    """Withdraw a carrier's answer for a service (its clients get the default line's
    VIP) when that carrier's VIP has no healthy real server, and restore it when it has
    again; damped by the model's dns.health settings."""
    import signal
    import time

    from dcnet.dns.follow import FollowBusy, Follower
    from dcnet.dns.health import HAProxySource, IPVSSource, RegistrySource
    from dcnet.model import load_model
    from dcnet.target import DEFAULT_MAX_CHANGE, registry

    model = load_model_or_exit(model_path)
    sources: list = []
    for text in haproxy:
        path, carriers = split_scope(text)
        sources.append(HAProxySource(path, carriers))
    sources += [IPVSSource()] if ipvs else []
    sources += [IPVSSource(netns) for netns in ipvs_netns]
    for text in etcd:
        from dcnet.cli.elbctl_store import open_store
        url, carriers = split_scope(text)
        sources.append(RegistrySource(open_store(url, "dns follow")[1], carriers,
                                      name=f"etcd {url}"))
    if not sources:
        raise click.UsageError("give at least one health source: --haproxy, --ipvs(-netns), --etcd")
    given = {k: v for k, v in options.items() if v is not None}
    try:
        directory = registry.create("dns", **given).directory
    except DNS_ERRORS as exc:
        fail(exc)

    def log(text: str) -> None:
        click.echo(f"{time.strftime('%H:%M:%S')} elbctl dns follow: {text}", err=True)

    stopping: list[bool] = []
    previous = signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    follower = Follower(
        model, sources, lambda: registry.create("dns", **given),
        state_dir or os.path.join(directory, ".dcnet-health"), log=log, resync=resync,
        force=force, max_change=DEFAULT_MAX_CHANGE if max_change is None else max_change,
        model_path=model_path, model_loader=load_model)
    server = None
    try:
        with follower:
            if metrics_address:
                server = serve_follow_metrics(follower, metrics_address,
                                              lambda: registry.create("dns", **given))
                log(f"metrics on {server.url}")
            log(f"following {len(sources)} source(s) every {interval:g}s: "
                + "; ".join(s.name for s in sources))
            follower.run(interval, rounds=1 if once else None, stop=lambda: bool(stopping))
    except FollowBusy as exc:
        fail(exc)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server is not None:
            server.close()


def serve_follow_metrics(follower, address: str, target_factory):
    """The ``/metrics`` endpoint of ``elbctl dns follow``; exits 3 when it cannot listen."""
    from dcnet.metrics.dns import DNSFollowCollector
    from dcnet.metrics.exposition import Exposition
    from dcnet.metrics.server import serve

    exposition = Exposition()
    exposition.register(DNSFollowCollector(follower, target_factory))
    try:
        return serve(exposition, address)
    except (OSError, ValueError) as exc:
        click.echo(f"elbctl dns follow: cannot serve metrics on {address}: {exc}", err=True)
        sys.exit(3)
