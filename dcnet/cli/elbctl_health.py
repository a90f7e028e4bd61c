"""``elbctl health``: run the model's health checks for a target without a checker of its
own (``--target nft``) and re-apply it when a real server's check changes state.

The checks are keepalived's (per real server port: ``tcp`` connect or ``http`` GET with
the expected status; ``interval``, ``timeout``, ``rise``, ``fall`` from the service's
``health_check``), run from the target's network namespace. The state goes to
``<state dir>/health-<netns>.json``; every apply (this command's, and an operator's
``elbctl apply --target nft --nft-health``) gives a down server weight 0: new
connections avoid it, established ones keep it (conntrack), as a drain does.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time

import click

from dcnet.cli.common import (
    load_model_or_exit,
    model_option,
    report_target_error,
    target_errors,
    target_kwargs,
    with_target_options,
)
from dcnet.target.session import DEFAULT_LOCK_TIMEOUT

TARGETS = ("nft",)       # targets with a `health` option (the others check by themselves)


@click.command("health")
@model_option
@click.option("--target", type=click.Choice(TARGETS), default="nft", show_default=True,
              help="The target whose real servers this checks.")
@click.option("--once", is_flag=True, help="Probe every check `rise`/`fall` times, apply, "
                                          "print the checks that are down, exit.")
@click.option("--lock-timeout", type=float, default=DEFAULT_LOCK_TIMEOUT, show_default=True,
              envvar="DCNET_LOCK_TIMEOUT", help="Seconds to wait for the target's lock.")
@with_target_options
def health_cmd(model_path: str, target: str, once: bool, lock_timeout: float,
               **params) -> None:
    """Run the model's health checks and keep the target's weights following them."""
    from dcnet.health import state
    from dcnet.health.checker import Checker
    from dcnet.sysio import netns
    from dcnet.target import registry, session

    options = {**target_kwargs(target, params), "health": True}
    model = load_model_or_exit(model_path)
    refused, unavailable = target_errors(target)
    try:
        instance = registry.create(target, **options)
    except (*refused, *unavailable) as exc:
        report_target_error(target, exc)
    path = state.path_of(instance.state_dir, instance.netns)
    where = netns.path_of(instance.netns) if instance.netns else None
    instance.close()

    def log(text: str) -> None:
        click.echo(f"{time.strftime('%H:%M:%S')} elbctl health: {text}", err=True)

    def apply() -> None:
        outcome = session.run(target, model, options, apply=True, lock_timeout=lock_timeout)
        if not outcome.result.ok:
            raise RuntimeError(outcome.result.to_text().splitlines()[0])

    checker = Checker(model, path, apply, log, where)
    checks = len(checker.board.trackers)
    log(f"{checks} check(s) for --target {target}, state in {path}")
    if once:
        checker.run(until=Checker.settled)
        for text, detail in sorted(checker.down().items()):
            click.echo(f"down: {text} ({detail})")
        sys.exit(0)
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    with contextlib.suppress(KeyboardInterrupt):
        checker.run(stop=lambda: bool(stopping))


def register(cli: click.Group, render: click.Group) -> None:
    cli.add_command(health_cmd)
