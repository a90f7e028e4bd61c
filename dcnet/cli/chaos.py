"""``elbctl chaos``: fault experiments (issue #20) — ``run``, ``recover``, ``validate``.

``run EXPERIMENT.yaml`` (a path, or the name of a shipped experiment) runs it through
:func:`dcnet.chaos.runner.run`: it prints the result as JSON (and writes it with
``--out``; ``--report DIR`` adds the Markdown report and timeline plot of
:mod:`dcnet.chaos.report`); exit 0 when the steady state held after the run and
nothing was left over, 1 otherwise, 130 when interrupted (after reverting every
fault). ``recover`` reverts what the journal holds (after a SIGKILLed runner).
``validate`` checks an experiment file and prints every problem with file, line and
field. ``unused`` is the janitor: what the targets run that the model does not declare
(:mod:`dcnet.chaos.janitor`), a node's CNI left-overs (host-gw: ``janitor_cni``,
``janitor_routes``; macvlan DHCP leases and shim routes: ``janitor_dhcp``), carrier VIPs
no DNS view answers (``janitor_vips``) and services with no real server for N days
(``janitor_idle``).
"""

from __future__ import annotations

import json
import os
import sys
import time

import click

from dcnet.chaos import experiment as exp
from dcnet.chaos import janitor, janitor_cni, janitor_idle, janitor_vips, runner
from dcnet.chaos import report as chaos_report
from dcnet.chaos.journal import DEFAULT_JOURNAL, ENV_JOURNAL, Journal
from dcnet.cli.common import (
    load_model_or_exit,
    output_option,
    report_target_error,
    target_class_of,
    target_errors,
    target_kwargs,
    with_target_options,
)
from dcnet.dns.layout import answered
from dcnet.target.session import DEFAULT_LOCK_TIMEOUT

journal_option = click.option("--journal", default=DEFAULT_JOURNAL, show_default=True,
                              envvar=ENV_JOURNAL, help="The fault journal file.")
var_option = click.option("--var", "variables", multiple=True, metavar="NAME=VALUE",
                          help="Replace ${NAME} in the experiment (repeatable).")


def _load(path: str, variables: tuple[str, ...]) -> exp.Experiment:
    if not os.path.exists(path) and "/" not in path and not path.endswith(".yaml"):
        path = exp.builtin(path)
    pairs = {}
    for item in variables:
        name, eq, value = item.partition("=")
        if not eq:
            raise click.UsageError(f"--var {item!r} is not NAME=VALUE")
        pairs[name] = value
    try:
        return exp.load(path, pairs)
    except exp.ExperimentError as exc:
        click.echo(f"{path}: {len(exc.problems)} error(s)", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(1)


@click.group("chaos")
def chaos() -> None:
    """Fault experiments with steady-state checks; every fault journaled and reverted."""


@chaos.command("validate")
@click.argument("experiment")
@var_option
def validate(experiment: str, variables: tuple[str, ...]) -> None:
    """Check an experiment file; OK or every problem with file:line: field."""
    loaded = _load(experiment, variables)
    click.echo(f"OK: {loaded.source}: {len(loaded.method)} steps, {len(loaded.probes)} probes")


@chaos.command("run")
@click.argument("experiment")
@var_option
@journal_option
@click.option("--out", help="Write the result (JSON) here too.")
@click.option("--report", "report_dir", metavar="DIR",
              help="Write result.json, report.md and timeline.png (the plot) into DIR.")
def run(experiment: str, variables: tuple[str, ...], journal: str, out: str | None,
        report_dir: str | None) -> None:
    """Run an experiment: steady state, faults, rollbacks, steady state; print the result."""
    loaded = _load(experiment, variables)
    result = runner.run(loaded, Journal(journal), out=out,
                        log=lambda line: click.echo(line, err=True))
    if report_dir:
        for path in chaos_report.write(result, report_dir):
            click.echo(f"wrote {path}", err=True)
    click.echo(json.dumps(result, indent=2, sort_keys=True))
    if result["interrupted"]:
        sys.exit(130)
    if not result["ok"]:
        sys.exit(1)


@chaos.command("recover")
@journal_option
def recover(journal: str) -> None:
    """Revert every fault the journal holds (a runner that was SIGKILLed)."""
    with Journal(journal).locked() as held:
        done = runner.recover(held, log=lambda line: None)
    for line in done:
        click.echo(line)
    if not done:
        click.echo("nothing to recover")
    if Journal(journal).pending():
        sys.exit(1)


def register(cli: click.Group, render: click.Group) -> None:
    cli.add_command(chaos)


@chaos.command("unused")
@click.option("-f", "--file", "model_path", help="The service model (YAML), for --target.")
@click.option("--target", "targets", multiple=True,
              help="A target to look at (repeatable: lvs, haproxy, dns, nft...).")
@click.option("--cni-conf", help="A node's CNI conflist (or dcnet conf): host-gw IPAM "
                                 "reservations, veths and routes without pods; macvlan "
                                 "DHCP leases and host-shim routes without pods.")
@click.option("--cni-netns", help="The node's network namespace (default: this one).")
@click.option("--vips", is_flag=True, help="With -f: carrier VIPs no DNS view answers "
                                           "(listed only: the model owns them).")
@click.option("--days", type=float, help="With -f: services with no real server for "
                                       "this many days (listed only: the model owns them).")
@click.option("--janitor-state", default=janitor_idle.DEFAULT_STATE, show_default=True,
              envvar=janitor_idle.ENV_STATE,
              help="Where --days keeps since when each service has had no real server.")
@click.option("--min-age", type=float, default=60.0, show_default=True,
              help="Seconds a reservation must exist before it counts as unused.")
@click.option("--apply", "do_apply", is_flag=True,
              help="Remove what is unused, through the owning target.")
@click.option("--force", is_flag=True, help="Let the removal exceed the change guard.")
@click.option("--lock-timeout", type=float, default=DEFAULT_LOCK_TIMEOUT, show_default=True,
              envvar="DCNET_LOCK_TIMEOUT", help="Seconds to wait for a target's lock.")
@output_option
@with_target_options
def unused(model_path: str | None, targets: tuple[str, ...], cni_conf: str | None,
           cni_netns: str | None, vips: bool, days: float | None, janitor_state: str,
           min_age: float, do_apply: bool, force: bool, lock_timeout: float, output: str,
           **params) -> None:
    """The janitor: what the targets run that the model does not declare, CNI
    reservations, veths and host-gw routes without pods, macvlan DHCP leases and
    host-shim routes without pods (--cni-conf), carrier VIPs no DNS view answers (--vips;
    listed only), services with no real server for N days (--days N; listed only), as
    a plan;
    --apply removes it through the owning component. Exit 0 nothing unused (or all
    removed), 2 unused left, 1 failed."""
    by_model = targets or vips or days is not None
    if not (model_path and by_model) and not cni_conf:
        raise click.UsageError("give -f MODEL with --target, --vips or --days, or --cni-conf")
    if (vips or days is not None) and not model_path:
        raise click.UsageError("--vips and --days need -f MODEL")
    model = load_model_or_exit(model_path) if by_model else None
    reports: list = []
    for target in targets:
        own = {"t_" + o.flag.replace("-", "_") for o in target_class_of(target).options}
        options = target_kwargs(target, {k: v for k, v in params.items() if k in own})
        refused, unavailable = target_errors(target)
        try:
            reports.append(janitor.unused(target, model, options, lock_timeout=lock_timeout,
                                          apply=do_apply, force=force))
        except (*refused, *unavailable) as exc:
            report_target_error(target, exc)
    left = any(r.unused and not r.applied for r in reports)
    failed = any(not r.ok for r in reports)
    if vips:
        reports.append(janitor_vips.unused(model, answered(model), apply=do_apply))
        left = left or bool(reports[-1].vips)
    if days is not None:
        try:
            reports.append(janitor_idle.unused(model, days, janitor_state, time.time(),
                                               apply=do_apply))
        except (OSError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        left = left or bool(reports[-1].services)
    if cni_conf:
        cni = janitor_cni.unused(cni_conf, cni_netns, apply=do_apply, min_age=min_age)
        reports.append(cni)
        left, failed = left or cni.left, failed or cni.failed
    for report in reports:
        click.echo(json.dumps(report.to_dict()) if output == "json" else report.to_text())
    if failed:
        sys.exit(1)
    if left:
        sys.exit(2)
