"""``elbctl`` commands of the LVS target (``plan|apply --target lvs`` are elbctl's own).

- ``verify -f MODEL``: a route lookup per carrier VIP (``ip route get GW-side client from
  VIP``) must leave by the carrier's uplink and gateway;
- (``backend add|remove|drain`` is generic over the targets: dcnet/cli/elbctl_backend.py,
  which calls LVS's fast path for ``--target lvs``);
- ``render keepalived -f MODEL`` and ``render realserver -f MODEL``.

Exit codes as elbctl's: 1 invalid input or failed apply/check, 3 IPVS or state unavailable.
"""

from __future__ import annotations

import json
import os
import sys

import click

from dcnet.cli.common import load_model_or_exit

EXIT_INVALID, EXIT_UNAVAILABLE = 1, 3

netns_option = click.option("--lvs-netns", "lvs_netns", default=None,
                            help="Network namespace of the director (default "
                                 "$DCNET_LVS_NETNS, else this one).")


@click.command("verify")
@click.option("-f", "--file", "model_path", required=True, type=click.Path(dir_okay=False))
@netns_option
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def verify_cmd(model_path: str, lvs_netns: str | None, output: str) -> None:
    """Check the carrier routing: a lookup from every VIP leaves by its carrier."""
    from dcnet.lvs.routing import Routing
    from dcnet.lvs.verify import verify

    model = load_model_or_exit(model_path)
    routing = Routing(model.lvs, netns=lvs_netns or os.environ.get("DCNET_LVS_NETNS") or None)
    try:
        checks = verify(model, routing)
    finally:
        routing.close()
    bad = [c for c in checks if not c.ok]
    if output == "json":
        click.echo(json.dumps([vars(c) for c in checks], indent=2))
    else:
        for c in checks:
            click.echo(c.describe())
        click.echo(f"{len(checks) - len(bad)} of {len(checks)} route lookups as expected")
    sys.exit(EXIT_INVALID if bad else 0)


@click.command("keepalived")
@click.option("-f", "--file", "model_path", required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here "
              "(atomically) instead of printing.")
@click.option("--director", default=None, help="Render for this director of lvs.directors "
              "(its priority; MASTER if highest).")
@click.option("--templates", default=None, type=click.Path(file_okay=False),
              help="Operator templates overriding the built-in ones (default "
                   "$DCNET_LVS_TEMPLATES).")
@click.option("--no-check", is_flag=True, help="Skip 'keepalived -t'.")
def render_keepalived(model_path: str, output: str | None, director: str | None,
                      templates: str | None, no_check: bool) -> None:
    """Render keepalived.conf (VRRP per director group, virtual servers, carrier rules)."""
    from dcnet.lvs.keepalived import KeepalivedError, check_config, interfaces, render

    model = load_model_or_exit(model_path)
    try:
        text = render(model, director=director,
                      templates=templates or os.environ.get("DCNET_LVS_TEMPLATES"))
        if not no_check:
            check_config(text, interfaces(model))
    except KeepalivedError as exc:
        click.echo(f"elbctl: render keepalived: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    if output:
        from dcnet.lvs.keepalived import write_atomically

        write_atomically(output, text)
        click.echo(f"wrote {output}" + ("" if no_check else " (keepalived -t: OK)"), err=True)
    else:
        click.echo(text, nl=False)


@click.command("realserver")
@click.option("-f", "--file", "model_path", required=True, type=click.Path(dir_okay=False))
@click.option("--server", "servers", multiple=True, help="Only for this real-server address "
              "(repeatable; default every DR/TUN real server).")
@click.option("--via", "vias", multiple=True, metavar="CARRIER=ADDR",
              help="Next hop of a carrier on the real servers (default: the carrier gateway).")
def render_realserver(model_path: str, servers: tuple[str, ...], vias: tuple[str, ...]) -> None:
    """Print the shell commands each DR/TUN real server needs."""
    from dcnet.lvs.realserver import RealServerError, render_all

    model = load_model_or_exit(model_path)
    try:
        click.echo(render_all(model, servers=servers, vias=vias), nl=False)
    except RealServerError as exc:
        click.echo(f"elbctl: render realserver: {exc}", err=True)
        sys.exit(EXIT_INVALID)


def register(cli: click.Group, render_group: click.Group) -> None:
    cli.add_command(verify_cmd)
    render_group.add_command(render_keepalived)
    render_group.add_command(render_realserver)
