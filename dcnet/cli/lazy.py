"""A click group whose subcommands are imported on first use.

``elbctl`` has some 30 commands over ten modules whose imports (jinja2, pyroute2, the
chaos runner, the etcd client, prometheus_client ...) cost tens of MiB and, under the
kernel lab's emulation, most of a minute per process. A :class:`LazyGroup` knows each
lazy command by name and the module that declares it; the module is imported, and its
``register(cli, render)`` function run on two scratch groups, only when the command is
resolved (running it, ``COMMAND --help``, or the group's own ``--help`` listing).
So a module stays the one place that declares its commands, and the map here only says
where to look; ``tests/unit/test_elbctl_lazy.py`` checks that the two agree.
"""

from __future__ import annotations

import importlib

import click

TOP = "top"
RENDER = "render"


def declared(module_name: str) -> dict[str, dict[str, click.Command]]:
    """The commands ``module_name``'s ``register()`` adds: {TOP: {...}, RENDER: {...}}."""
    module = importlib.import_module(module_name)
    top, render = click.Group("scratch"), click.Group("scratch-render")
    module.register(top, render)
    return {TOP: dict(top.commands), RENDER: dict(render.commands)}


class LazyGroup(click.Group):
    """A group with eager commands (``@group.command``) and lazy ones: ``lazy`` maps a
    command name to the module whose ``register()`` declares it under ``where`` (TOP for
    the top-level group, RENDER for ``render``)."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, where: str = TOP,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})
        self.where = where

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None or name not in self.lazy:
            return command
        command = declared(self.lazy[name])[self.where].get(name)
        if command is None:        # a map that disagrees with the module: a bug here
            raise RuntimeError(f"{self.lazy[name]}.register() declares no {self.where} "
                               f"command {name!r}")
        self.add_command(command, name)
        return command
