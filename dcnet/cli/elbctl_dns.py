"""``elbctl render dns``: the DNS target's own command.

``elbctl render dns -f MODEL -o DIR`` checks the carrier lists, renders named.conf and
the zone files into DIR (serials continue from what DIR already holds), checks them
with named-checkzone and named-checkconf -z, and only then writes them (each atomically).
``elbctl plan|apply --target dns`` are elbctl's own (options declared by
:class:`dcnet.dns.backend.DNSTarget`).
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
