"""``elbctl``: validate a service model, and plan or apply it against a target.

Commands: ``validate`` (OK or every error with file, line and field; non-zero exit on
errors), ``show`` (what the model declares), ``plan`` and ``apply`` (diff against the
live target through the back end registered for ``--target``).
Exit codes: 0 success, 1 invalid model or failed apply, 2 usage error, 3 target unavailable.
"""

from __future__ import annotations

import json
import sys
from typing import NoReturn

import click

from dcnet import backends
from dcnet.model import Model, ModelError, load_model
from dcnet.plan import apply_plan

EXIT_INVALID, EXIT_UNAVAILABLE = 1, 3

model_option = click.option("-f", "--file", "model_path", required=True,
                            type=click.Path(dir_okay=False),
                            help="The service model (YAML).")
output_option = click.option("-o", "--output", type=click.Choice(["text", "json"]),
                             default="text", show_default=True, help="Output format.")
target_option = click.option("--target", default="lvs", show_default=True,
                             help="Back end to plan/apply against.")


def _load(model_path: str) -> Model:
    try:
        return load_model(model_path)
    except ModelError as exc:
        exit_invalid_model(model_path, exc)


def exit_invalid_model(model_path: str, exc: ModelError) -> NoReturn:
    """Print every problem of an invalid model (file, line, field) and exit 1."""
    count = len(exc.problems)
    click.echo(f"{model_path}: {count} error{'s' if count != 1 else ''}", err=True)
    for problem in exc.problems:
        click.echo(f"  {problem}", err=True)
    sys.exit(EXIT_INVALID)


def _backend(target: str):
    try:
        return backends.create(target)
    except backends.UnknownTarget as exc:
        click.echo(f"elbctl: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Program the ELB (LVS, HAProxy, DNS) from one declarative service model."""


@cli.command()
@model_option
@output_option
def validate(model_path: str, output: str) -> None:
    """Check a model; print OK or every error, exit non-zero on errors."""
    model = _load(model_path)
    if output == "json":
        click.echo(json.dumps({"ok": True, "carriers": len(model.carriers),
                               "services": len(model.services)}))
    else:
        click.echo(f"OK: {model_path}: {len(model.carriers)} carriers, "
                   f"{len(model.services)} services")


@cli.command()
@model_option
def show(model_path: str) -> None:
    """Print what a model declares: carriers, services, VIPs and real servers."""
    model = _load(model_path)
    click.echo(describe_model(model))


def describe_model(model: Model) -> str:
    lines = ["carriers:"]
    for c in model.carriers:
        mark = " (default line)" if c.default else ""
        ranges = ", ".join(map(str, c.vip_ranges))
        lines.append(f"  {c.name:<8} uplink {c.uplink} via {c.gateway} table {c.table} "
                     f"VIPs {ranges}; {len(c.cidrs)} client prefixes{mark}")
    lines.append("services:")
    for s in model.services:
        lines.append(f"  {s.name}")
        lines.append("    vips: " + ", ".join(f"{c}={v}" for c, v in s.vips))
        for p in s.ports:
            persist = f" persistence {p.persistence}s" if p.persistence else ""
            lines.append(f"    {p.protocol.value}/{p.port} -> :{p.backend_port} "
                         f"{p.scheduler} {p.forward.value}{persist}")
        servers = ", ".join(f"{r.address}{':' + str(r.port) if r.port else ''} w{r.weight}"
                            for r in s.real_servers) or "none"
        lines.append(f"    real servers: {servers}")
    return "\n".join(lines)


@cli.command()
@model_option
@target_option
@output_option
def plan(model_path: str, target: str, output: str) -> None:
    """Show what apply would change on the target, in order."""
    model = _load(model_path)
    the_plan = _backend(target).plan(model)
    click.echo(the_plan.to_json() if output == "json" else the_plan.to_text())


@cli.command()
@model_option
@target_option
@output_option
@click.option("--no-rollback", is_flag=True, help="On failure keep the steps already applied.")
def apply(model_path: str, target: str, output: str, no_rollback: bool) -> None:
    """Make the target match the model, changing only the difference."""
    model = _load(model_path)
    backend = _backend(target)
    result = apply_plan(backend, backend.plan(model), rollback=not no_rollback)
    click.echo(json.dumps(result.to_dict(), indent=2) if output == "json" else result.to_text())
    if not result.ok:
        sys.exit(EXIT_INVALID)


@cli.group()
def render() -> None:
    """Render configuration files (keepalived, HAProxy, BIND) from the model."""


# Back ends add their own commands (under ``cli`` or ``render``) through a
# ``register(cli, render)`` function in these modules.
EXTENSIONS: tuple[str, ...] = ("dcnet.dns.cli", "dcnet.haproxy.cli", "dcnet.lvs.cli",
                               "dcnet.elbstore.cli")


def _register_extensions() -> None:
    import importlib

    for name in EXTENSIONS:
        importlib.import_module(name).register(cli, render)


_register_extensions()


def main() -> None:
    cli(prog_name="elbctl")


if __name__ == "__main__":
    main()
