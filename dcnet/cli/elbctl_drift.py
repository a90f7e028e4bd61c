"""``elbctl drift``: the one-shot drift watcher (issue #20).

Plans the model on ``--target`` under the target's lock (:mod:`dcnet.chaos.drift`). No
changes: exit 0. Changes: the target was changed outside dcnet; one audit event (who
noticed, the changes, the time, the target, the director) is printed as a JSON line and
appended to ``--audit-log``; with ``--repair`` the model is applied (through
:func:`dcnet.target.session.run`) and the event records the repair. Exit 2 on drift
(repaired or not), 1 on a failed repair or invalid model, 3 when the target is down.

Who changed it: a one-shot check sees the result, not the change, so ``changed_by``
says "unknown" (not watched); ``--watch SECONDS`` first watches the target's namespace
that long (:class:`dcnet.sysio.nlmonitor.Monitor`: routes, rules, addresses, nftables)
and attributes the drift to the processes the kernel names.
"""

from __future__ import annotations

import json
import sys
import time

import click

from dcnet.chaos import drift
from dcnet.cli.common import (
    EXIT_INVALID,
    load_model_or_exit,
    model_option,
    report_target_error,
    target_class_of,
    target_errors,
    target_kwargs,
    with_target_options,
)
from dcnet.sysio.nlmonitor import Monitor
from dcnet.target.session import DEFAULT_LOCK_TIMEOUT

EXIT_DRIFT = 2


@click.command("drift")
@model_option
@click.option("--target", required=True, help="The target to watch (lvs, haproxy, dns, ...).")
@click.option("--audit-log", default=drift.DEFAULT_AUDIT_LOG, show_default=True,
              envvar="DCNET_AUDIT_LOG", help="JSON-lines file the audit events are appended to.")
@click.option("--repair", is_flag=True, help="Apply the model when the target drifted.")
@click.option("--force", is_flag=True, help="Let the repair exceed the change guard.")
@click.option("--lock-timeout", type=float, default=DEFAULT_LOCK_TIMEOUT, show_default=True,
              envvar="DCNET_LOCK_TIMEOUT", help="Seconds to wait for the target's lock.")
@click.option("--watch", type=click.FloatRange(min=0), default=0.0, metavar="SECONDS",
              help="First watch the target's namespace this long: the event then names "
                   "who changed routes, rules, addresses and nftables.")
@with_target_options
def drift_command(model_path: str, target: str, audit_log: str, repair: bool, force: bool,
                  lock_timeout: float, watch: float, **params) -> None:
    """Notice state changed outside dcnet on a target: audit it, and repair with --repair."""
    options = target_kwargs(target, params)
    if force and any(o.name == "force" for o in target_class_of(target).options):
        options["force"] = True
    model = load_model_or_exit(model_path)
    refused, unavailable = target_errors(target)
    changes, lost = watched(options.get("netns"), watch) if watch else (None, 0)
    try:
        event = drift.check(target, model, options, lock_timeout=lock_timeout,
                            repair=repair, force=force, changes=changes, lost=lost)
    except (*refused, *unavailable) as exc:
        report_target_error(target, exc)
    if event is None:
        click.echo(f"{target}: no drift", err=True)
        return
    click.echo(json.dumps(event, sort_keys=True))
    drift.append_event(audit_log, event)
    if repair and not event["repair"]["ok"]:
        sys.exit(EXIT_INVALID)
    sys.exit(EXIT_DRIFT)


def watched(netns: str | None, seconds: float) -> tuple[list[dict], int]:
    """The kernel changes in ``netns`` (a name or path; default here) over ``seconds``,
    and how many were lost."""
    path = netns if not netns or "/" in netns else f"/run/netns/{netns}"
    try:
        monitor = Monitor(path).start()
    except OSError as exc:
        raise click.ClickException(f"--watch: the kernel's notifications: {exc}") from None
    try:
        click.echo(f"watching for {seconds:g} s", err=True)
        time.sleep(seconds)
        return monitor.changes(), monitor.lost
    finally:
        monitor.close()


def register(cli: click.Group, render: click.Group) -> None:
    cli.add_command(drift_command)
