"""``elbctl chaos``: fault experiments (issue #20) — ``run``, ``recover``, ``validate``.

``run EXPERIMENT.yaml`` (a path, or the name of a shipped experiment) runs it through
:func:`dcnet.chaos.runner.run`: it prints the result as JSON (and writes it with
``--out``); exit 0 when the steady state held after the run and nothing was left over,
1 otherwise, 130 when interrupted (after reverting every fault). ``recover`` reverts what
the journal holds (after a SIGKILLed runner). ``validate`` checks an experiment file and
prints every problem with file, line and field.
"""

from __future__ import annotations

import json
import os
import sys

import click

from dcnet.chaos import experiment as exp
from dcnet.chaos import runner
from dcnet.chaos.journal import DEFAULT_JOURNAL, ENV_JOURNAL, Journal

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
def run(experiment: str, variables: tuple[str, ...], journal: str, out: str | None) -> None:
    """Run an experiment: steady state, faults, rollbacks, steady state; print the result."""
    loaded = _load(experiment, variables)
    result = runner.run(loaded, Journal(journal), out=out,
                        log=lambda line: click.echo(line, err=True))
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
