"""Rendering BIND configuration from a :class:`~dcnet.dns.layout.Layout` (pure).

It owns the server settings (:class:`ServerOptions`: BIND directory, listen addresses,
port, rndc control channel), the jinja2 templates in ``templates/`` (``named.conf.j2``,
``server.conf.j2``, ``zone.j2``) and :class:`Bundle`, the rendered file set: one
``named.conf`` and one zone file per declared (not shared) zone, each with its SOA serial
from :mod:`dcnet.dns.serial`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

import jinja2

from dcnet.dns.layout import NS_LABEL, Layout
from dcnet.dns.serial import Installed, next_serial

NAMED_CONF = "named.conf"
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
    trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined, autoescape=False)


@dataclass(frozen=True)
class ServerOptions:
    """How named runs: where its files live, where it listens, its rndc channel."""

    directory: str
    port: int = 53
    listen: tuple[str, ...] = ("any",)
    listen_v6: tuple[str, ...] = ("none",)
    key_file: str | None = None          # rndc key; no control channel without one
    key_name: str = "rndc-key"
    control_address: str = "127.0.0.1"
    control_port: int = 953
    ns_address: str = "127.0.0.1"        # address of the zone's own NS record

    def with_directory(self, directory: str) -> ServerOptions:
        return replace(self, directory=directory)


@dataclass(frozen=True)
class Bundle:
    """A rendered configuration: file name -> text, and each declared zone's serial
    (immutable: :func:`render` gives read-only mappings, so a plan can carry it)."""

    layout: Layout
    options: ServerOptions
    named_conf: str
    zone_files: Mapping[str, str]
    serials: Mapping[tuple[str, str], int] = field(default_factory=dict)
    server_digest: str = ""

    def files(self) -> dict[str, str]:
        return {NAMED_CONF: self.named_conf, **self.zone_files}


def server_block(options: ServerOptions) -> str:
    return _ENV.get_template("server.conf.j2").render(o=options).rstrip("\n")


def server_digest(options: ServerOptions) -> str:
    """Identifies the server settings; the BIND directory itself is left out."""
    text = server_block(options.with_directory("."))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def render_named_conf(layout: Layout, options: ServerOptions, source: str) -> str:
    zones_by_view: dict[str, list] = {v.name: [] for v in layout.views}
    for z in layout.zones:
        zones_by_view[z.view].append(z)
    return _ENV.get_template("named.conf.j2").render(
        source=source, server=server_block(options), server_digest=server_digest(options),
        acls=layout.acls, views=layout.views, zones_by_view=zones_by_view)


def render_zone(decl, serial: int, options: ServerOptions, source: str) -> str:
    ns_type = "A" if ipaddress.ip_address(options.ns_address).version == 4 else "AAAA"
    return _ENV.get_template("zone.j2").render(
        source=source, data=decl.data, view=decl.view, serial=serial, ns_label=NS_LABEL,
        ns_type=ns_type, ns_address=options.ns_address)


def render(layout: Layout, options: ServerOptions, *, source: str = "the model",
           installed: Mapping[tuple[str, str], Installed] | None = None,
           today: dt.date | None = None) -> Bundle:
    """Render every file; serials come from ``installed`` (what the directory holds)."""
    installed = installed or {}
    today = today or dt.date.today()
    serials, zone_files = {}, {}
    for decl in layout.zones:
        if decl.file is None:
            continue
        serial = next_serial(decl.key, decl.data.digest(), installed, today)
        serials[decl.key] = serial
        zone_files[decl.file] = render_zone(decl, serial, options, source)
    return Bundle(layout, options, render_named_conf(layout, options, source),
                  MappingProxyType(zone_files), MappingProxyType(serials),
                  server_digest(options))
