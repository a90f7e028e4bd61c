"""Talking to BIND: checking files with its tools, rndc, and installing files atomically.

It owns ``named-checkconf -z`` / ``named-checkzone`` runs (:func:`check_bundle` stages a
rendered bundle in a directory and checks it there, before anything is installed),
:class:`Rndc` (status, reconfig, ``reload ZONE IN VIEW``; a named that does not answer
gives :class:`NamedDown` with what was tried) and :func:`install_file` (write a temporary
file next to the target, fsync, rename over it).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from dcnet.dns.render import NAMED_CONF, Bundle, render_named_conf
from dcnet.sysio import proc
from dcnet.sysio.files import atomic_write


class BindError(RuntimeError):
    """A BIND tool refused the configuration or failed."""


class NamedDown(BindError):
    """named does not answer on its rndc control channel."""


def _run(argv: list[str], what: str, netns: str | None = None) -> str:
    try:
        return proc.run(argv, netns=netns, timeout=120).stdout
    except proc.CommandError as exc:
        detail = (exc.stdout.strip() + "\n" + exc.stderr.strip()).strip()
        raise BindError(f"{what} failed ({' '.join(argv)}):\n{detail}") from None


def write_bundle(bundle: Bundle, directory: str, source: str = "the model") -> str:
    """Write the bundle's files into ``directory`` with named.conf pointing there."""
    conf = render_named_conf(bundle.layout, bundle.options.with_directory(directory), source)
    for name, text in {**bundle.zone_files, NAMED_CONF: conf}.items():
        with open(os.path.join(directory, name), "w", encoding="utf-8") as fh:
            fh.write(text)
    return os.path.join(directory, NAMED_CONF)


def check_zone_files(bundle: Bundle, directory: str) -> None:
    for decl in bundle.layout.zones:
        if decl.file is not None:
            _run(["named-checkzone", "-q", "-k", "fail", "-n", "fail", decl.zone,
                  os.path.join(directory, decl.file)],
                 f"named-checkzone of zone {decl.zone} (view {decl.view})")


def check_conf(conf_path: str) -> None:
    _run(["named-checkconf", "-z", conf_path], "named-checkconf -z")


def check_bundle(bundle: Bundle, staging_parent: str | None = None,
                 source: str = "the model") -> None:
    """Stage the bundle in a temporary directory and run named-checkzone on every zone
    file and named-checkconf -z on named.conf; raise BindError naming what failed."""
    with tempfile.TemporaryDirectory(prefix=".dcnet-dns-check-", dir=staging_parent) as tmp:
        conf = write_bundle(bundle, tmp, source)
        check_zone_files(bundle, tmp)
        check_conf(conf)


def install_file(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (``dcnet.sysio.files.atomic_write``)."""
    atomic_write(os.path.abspath(path), text, mode=0o644, fsync=True)


@dataclass(frozen=True)
class Rndc:
    """rndc against one named: key file, control address and port, optional netns."""

    key_file: str
    server: str = "127.0.0.1"
    port: int = 953
    netns: str | None = None
    timeout: int = 10

    def argv(self, *command: str) -> list[str]:
        return ["rndc", "-k", self.key_file, "-s", self.server, "-p", str(self.port),
                *command]

    def run(self, *command: str) -> str:
        try:
            return proc.run(self.argv(*command), netns=self.netns,
                            timeout=self.timeout + 5).stdout
        except proc.CommandError as exc:
            detail = (exc.stderr.strip() or exc.stdout.strip() or "no output")
            if "connection refused" in detail or "timed out" in detail or exc.returncode is None:
                raise NamedDown(self._down_message(detail)) from None
            raise BindError(f"rndc {' '.join(command)} failed: {detail}") from None

    def _down_message(self, detail: str) -> str:
        where = f" in network namespace {self.netns}" if self.netns else ""
        return (f"named is not answering rndc at {self.server}#{self.port}{where} ({detail}); "
                "is named running with this control channel?")

    def status(self) -> str:
        return self.run("status")

    def reconfig(self) -> None:
        self.run("reconfig")

    def reload(self, zone: str, view: str) -> None:
        self.run("reload", zone, "IN", view)
