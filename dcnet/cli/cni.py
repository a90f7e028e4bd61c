"""``dcnet-cni``: the CNI plugin binary, and ``dcnet-cni install``.

With CNI_COMMAND in the environment (how runtimes call a plugin) or no arguments it is
the plugin itself (``dcnet.cni.plugin``, light imports only). With a subcommand it is a
small admin tool: ``install`` writes ``dcnet`` (the C shim that hands each invocation to
the node's ``dcnet-agent``) and ``dcnet-python`` (the in-process plugin it falls back to)
into the CNI bin directory, and with ``--conf-dir`` the network's conflist into the CNI
config directory (checked, atomic, under a stable name).
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    if os.environ.get("CNI_COMMAND") or len(sys.argv) < 2:
        from dcnet.cni.plugin import main as plugin_main

        plugin_main()
        return
    _admin(prog_name="dcnet-cni")


def _admin(prog_name: str) -> None:
    import click

    from dcnet.cni.install import (
        CLIENTS,
        CONF_NAME,
        InstallError,
        check_conflist,
        install,
        install_conflist,
    )

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    def cli() -> None:
        """dcnet CNI plugin administration."""

    @cli.command("install")
    @click.option("--bin-dir", default="/opt/cni/bin", show_default=True,
                  help="CNI bin directory (the runtime's CNI_PATH).")
    @click.option("--python", default=None, help="Interpreter for dcnet-python "
                  "(default: this one).")
    @click.option("--client", type=click.Choice(CLIENTS), default="auto", show_default=True,
                  help="What 'dcnet' is: the C shim (auto: if cc works), the Python twin "
                  "of the shim, or the Python plugin itself (launcher).")
    @click.option("--exec-dir", default=None, help="Directory of the agent's exec sockets "
                  "(default /run/dcnet/exec; must match 'dcnet-agent run --exec-dir').")
    @click.option("--conf-dir", default=None, help="CNI config directory (e.g. "
                  "/etc/cni/net.d): also write --conflist there, atomically.")
    @click.option("--conflist", type=click.Path(dir_okay=False), default=None,
                  help="The network's conflist to install in --conf-dir (checked first).")
    @click.option("--conf-name", default=CONF_NAME, show_default=True,
                  help="Stable file name of the conflist in --conf-dir.")
    def install_cmd(bin_dir: str, python: str | None, client: str, exec_dir: str | None,
                    conf_dir: str | None, conflist: str | None, conf_name: str) -> None:
        """Install the plugin under the type name 'dcnet' (and its conflist)."""
        if (conf_dir is None) != (conflist is None):
            raise click.UsageError("--conf-dir and --conflist go together")
        try:
            if conflist is not None:
                check_conflist(conflist)  # before anything is written
            click.echo(install(bin_dir, python, client, exec_dir))
            if conf_dir is not None:  # last: the runtime finds the binaries it names
                click.echo(install_conflist(conf_dir, conflist, conf_name))
        except InstallError as exc:
            raise click.ClickException(str(exc)) from None

    cli(prog_name=prog_name)
