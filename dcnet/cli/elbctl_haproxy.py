"""``elbctl render haproxy``: the model as a validated haproxy.cfg.

Writes to ``-o FILE`` atomically, mode 0600, in a directory made 0700 when missing (or
prints). Every file written passes ``haproxy -c``;
services that break it are named on stderr and left out while the others render
(exit 1). ``--run-dir`` (or ``DCNET_HAPROXY_RUN_DIR``) sets where the admin socket and
server-state file live, as the running HAProxy will use them.
"""

from __future__ import annotations

import os
import sys

import click

from dcnet.cli.common import load_model_or_exit
from dcnet.haproxy.check import ConfigInvalid, render_valid
from dcnet.haproxy.paths import Paths
from dcnet.haproxy.render import TemplateError


def register(cli: click.Group, render: click.Group) -> None:
    render.add_command(render_haproxy)


@click.command("haproxy")
@click.option("-f", "--file", "model_path", required=True, type=click.Path(dir_okay=False),
              help="The service model (YAML).")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False),
              help="Write here (atomically) instead of printing.")
@click.option("--run-dir", help="Directory of the admin socket and server-state file "
              "(default $DCNET_HAPROXY_RUN_DIR or /run/dcnet-haproxy).")
def render_haproxy(model_path: str, output: str | None, run_dir: str | None) -> None:
    """Render haproxy.cfg from the model and validate it with haproxy -c."""
    from dcnet.sysio.files import atomic_write

    model = load_model_or_exit(model_path)
    paths = Paths.from_env(run_dir)
    try:
        checked = render_valid(model, paths)
    except (ConfigInvalid, TemplateError) as exc:   # TemplateError: the global template
        click.echo(f"elbctl: {exc}", err=True)
        sys.exit(1)
    from dcnet.haproxy import limits

    for warning in filter(None, (checked.warning, limits.problem(checked.rendered.text))):
        click.echo(f"elbctl: warning: {warning}", err=True)
    for name, errors in sorted(checked.bad.items()):
        click.echo(f"service {name}: invalid, left out:", err=True)
        for error in errors:
            click.echo(f"  {error}", err=True)
    if output:
        # a missing directory is made 0700; an existing one is left as it is
        os.makedirs(os.path.dirname(os.path.abspath(output)), mode=0o700, exist_ok=True)
        atomic_write(output, checked.rendered.text, mode=0o600)
        click.echo(f"wrote {output}: {len(model.services) - len(checked.bad)} services, "
                   f"{len(checked.bad)} invalid, {checked.checks} haproxy -c run(s)", err=True)
    else:
        click.echo(checked.rendered.text, nl=False)
    sys.exit(1 if checked.bad else 0)
