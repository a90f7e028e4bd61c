"""``elbctl lint``: the best-practice rules of :mod:`dcnet.lint` over a model file.

Prints ``file:line: ID severity: message [field]`` per finding (or JSON lines), exit 1
when an error-severity rule fires or the model is invalid, 0 otherwise. ``--rules``
lists the rules with their reasons.
"""

from __future__ import annotations

import json
import sys

import click

from dcnet.cli.common import EXIT_INVALID, exit_invalid_model, model_option, output_option
from dcnet.lint import RULES, has_errors, lint_file
from dcnet.model import ModelError


@click.command("lint")
@model_option
@output_option
def lint_command(model_path: str, output: str) -> None:
    """Check a model against the best-practice rules (silence per service with
    ``lint: {ignore: [ELB001]}``); exit 1 when an error-severity rule fires."""
    try:
        findings = lint_file(model_path)
    except ModelError as exc:
        exit_invalid_model(model_path, exc)
    for finding in findings:
        click.echo(json.dumps(finding.to_dict()) if output == "json" else str(finding))
    if output != "json":
        errors = sum(f.severity == "error" for f in findings)
        click.echo(f"{model_path}: {errors} errors, {len(findings) - errors} warnings",
                   err=True)
    if has_errors(findings):
        sys.exit(EXIT_INVALID)


@click.command("lint-rules")
def lint_rules() -> None:
    """List the lint rules: id, severity, reason."""
    for rule in RULES:
        click.echo(f"{rule.id} {rule.severity}: {rule.reason}")


def register(cli: click.Group, render: click.Group) -> None:
    cli.add_command(lint_command)
    cli.add_command(lint_rules)
