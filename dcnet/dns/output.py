"""Rendering a model into a directory (``elbctl render dns -o DIR``), checked first.

:func:`render_to_directory` refuses overlapping carrier lists and (unless forced) lists
changing more than 30% of what DIR's named.conf holds, renders with serials continuing
from DIR's zone files, runs named-checkzone and named-checkconf -z on a staged copy, and
only then writes each file atomically (zone files first, named.conf last) and removes
zone files no longer used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dcnet.dns import bind, carriers, installed
from dcnet.dns.layout import layout
from dcnet.dns.render import NAMED_CONF, Bundle, ServerOptions, render


@dataclass(frozen=True)
class Written:
    bundle: Bundle
    forced: tuple[carriers.ListChange, ...]
    removed: tuple[str, ...]


def client_lists(model) -> dict:
    """The carrier lists that become ACLs (the default line's view matches any)."""
    return {c.name: c.cidrs for c in model.carriers if c.cidrs and not c.default}


def render_to_directory(model, options: ServerOptions, *, force: bool = False,
                        check: bool = True) -> Written:
    directory = options.directory
    os.makedirs(directory, exist_ok=True)
    before = installed.read_directory(directory)
    carriers.check_overlaps(model.carriers)
    forced = carriers.change_guard(before.acls, client_lists(model), force=force)
    bundle = render(layout(model), options, source=model.source, installed=before.zone_files)
    if check:
        bind.check_bundle(bundle, directory, model.source)
    for name, text in bundle.zone_files.items():
        bind.install_file(os.path.join(directory, name), text)
    bind.install_file(os.path.join(directory, NAMED_CONF), bundle.named_conf)
    stale = sorted({d["file"] for d in before.zones.values() if d["file"]}
                   - set(bundle.zone_files))
    for name in stale:
        os.unlink(os.path.join(directory, name))
    return Written(bundle, tuple(forced), tuple(stale))
