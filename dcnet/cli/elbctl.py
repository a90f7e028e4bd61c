"""``elbctl``: validate a service model, and plan or apply it against a target.

Commands: ``validate`` (OK or every error with file, line and field; non-zero exit on
errors), ``show`` (what the model declares), ``plan`` and ``apply`` (diff against the
live target, one locked run through :func:`dcnet.target.session.run`; every target's
options are flags, built from the targets' declarations). The back ends' own commands
(``render``, ``verify``, ``backend``, the etcd commands) live in ``dcnet.cli.elbctl_*``;
``lint``, ``drift`` and ``chaos`` (issue #20) in ``elbctl_lint``, ``elbctl_drift``, ``chaos``.
Exit codes: 0 success, 1 invalid model, refused or failed apply, 2 usage error, 3 target
unavailable; ``plan --detailed-exitcode``: 0 no changes, 1 error, 2 changes.
"""

from __future__ import annotations

import json
import sys

import click

from dcnet.cli import lazy
from dcnet.cli.common import (
    EXIT_INVALID,
    load_model_or_exit,
    model_option,
    output_option,
    report_target_error,
    target_class_of,
    target_errors,
    target_kwargs,
    with_target_options,
)
from dcnet.model import Model
from dcnet.target import DEFAULT_MAX_CHANGE, session
from dcnet.target.session import DEFAULT_LOCK_TIMEOUT

target_option = click.option("--target", default="lvs", show_default=True,
                             help="The target to plan/apply against (lvs, haproxy, dns, ...).")
lock_option = click.option("--lock-timeout", type=float, default=DEFAULT_LOCK_TIMEOUT,
                           show_default=True, envvar="DCNET_LOCK_TIMEOUT",
                           help="Seconds to wait for another run holding the target's lock.")


# Where each lazily imported command is declared (its module's ``register()``): the
# module is imported only when the command runs (dcnet.cli.lazy).
COMMANDS = {name: "dcnet.cli." + module for module, names in {
    "elbctl_dns": ["dns"],
    "elbctl_lvs": ["verify"],
    "elbctl_backend": ["backend"],
    "elbctl_store": ["push", "history", "rollback", "status", "agent", "acl"],
    "elbctl_metrics": ["exporter", "metrics"],
    "elbctl_lint": ["lint", "lint-rules"],
    "elbctl_drift": ["drift"],
    "chaos": ["chaos"],
    "elbctl_mirror": ["mirror"],
    "elbctl_health": ["health"],
}.items() for name in names}
RENDER_COMMANDS = {"dns": "dcnet.cli.elbctl_dns", "haproxy": "dcnet.cli.elbctl_haproxy",
                   "keepalived": "dcnet.cli.elbctl_lvs", "realserver": "dcnet.cli.elbctl_lvs"}


@click.group(cls=lazy.LazyGroup, lazy=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Program the ELB (LVS, HAProxy, DNS) from one declarative service model."""


@cli.command()
@model_option
@output_option
def validate(model_path: str, output: str) -> None:
    """Check a model; print OK or every error, exit non-zero on errors."""
    model = load_model_or_exit(model_path)
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
    model = load_model_or_exit(model_path)
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


force_option = click.option(
    "--force", is_flag=True,
    help="Allow a plan that changes more than --max-change of the target's objects (and, "
         "for targets with guards of their own such as dns's carrier lists, those too).")


def _run(target: str, model_path: str, params: dict, force: bool = False,
         **kwargs) -> session.Outcome:
    options = target_kwargs(target, params)
    if force and any(o.name == "force" for o in target_class_of(target).options):
        options["force"] = True
    model = load_model_or_exit(model_path)          # invalid models stop here
    refused, unavailable = target_errors(target)
    try:
        return session.run(target, model, options, force=force, **kwargs)
    except (*refused, *unavailable) as exc:
        report_target_error(target, exc)


@cli.command()
@model_option
@target_option
@output_option
@lock_option
@force_option
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 0 when there is nothing to change, 2 when there is, 1 on errors.")
@with_target_options
def plan(model_path: str, target: str, output: str, lock_timeout: float, force: bool,
         detailed_exitcode: bool, **params) -> None:
    """Show what apply would change on the target, in order."""
    outcome = _run(target, model_path, params, force=force, apply=False,
                   lock_timeout=lock_timeout)
    the_plan = outcome.plan
    click.echo(the_plan.to_json() if output == "json" else the_plan.to_text())
    if detailed_exitcode and not the_plan.empty:
        sys.exit(2)


@cli.command()
@model_option
@target_option
@output_option
@lock_option
@click.option("--no-rollback", is_flag=True, help="On failure keep the steps already applied.")
@force_option
@click.option("--max-change", type=click.FloatRange(0, 1), default=DEFAULT_MAX_CHANGE,
              show_default=True, help="Largest share of owned objects one apply may update "
                                      "or delete without --force.")
@with_target_options
def apply(model_path: str, target: str, output: str, lock_timeout: float, no_rollback: bool,
          force: bool, max_change: float, **params) -> None:
    """Make the target match the model, changing only the difference."""
    outcome = _run(target, model_path, params, apply=True, lock_timeout=lock_timeout,
                   rollback=not no_rollback, force=force, max_change=max_change)
    result = outcome.result
    click.echo(json.dumps(result.to_dict(), indent=2) if output == "json" else result.to_text())
    if not result.ok:
        sys.exit(EXIT_INVALID)


@cli.group(cls=lazy.LazyGroup, lazy=RENDER_COMMANDS, where=lazy.RENDER)
def render() -> None:
    """Render configuration files (keepalived, HAProxy, BIND) from the model."""


def main() -> None:
    cli(prog_name="elbctl")


if __name__ == "__main__":
    main()
