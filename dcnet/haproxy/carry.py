"""Pure checks that a HAProxy file text carries the file-borne changes of a plan.

The ``haproxy`` target writes one file per apply (the final ``config`` step); the changes
it carries (``global``, ``service``, ``file-server``) are *staged* first: each one is
checked against the text the plan validated, and the final step checks the file it
wrote against every staged change again. This module owns those checks: what a change
looks like in a file (a marker's attributes, a ``server`` line in a backend section),
and :class:`FileView`, a file read once and indexed for them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from dcnet.haproxy.layout import server_key, slot_index
from dcnet.haproxy.render import ParsedFile, parse_file
from dcnet.plan import Action, Change

GLOBAL, SERVICE, FILE_SERVER = "global", "service", "file-server"
FILE_KINDS = frozenset({GLOBAL, SERVICE, FILE_SERVER})


class NotCarried(RuntimeError):
    """A file does not contain a change it was meant to carry."""


def file_servers(text: str) -> dict[tuple[str, str], dict]:
    """``(backend, "addr:port") -> attrs`` of every filled ``server`` line of ``text``
    (attrs as in :meth:`dcnet.haproxy.layout.ServerSpec.attrs`, plus ``slot``)."""
    out: dict[tuple[str, str], dict] = {}
    proxy = None
    for raw in text.splitlines():
        parts = raw.split()
        if not parts:
            continue
        if parts[0] in ("backend", "listen", "frontend", "defaults", "global") and \
                not raw[0].isspace():
            proxy = parts[1] if parts[0] in ("backend", "listen") and len(parts) > 1 else None
            continue
        if proxy is None or parts[0] != "server" or len(parts) < 3 or "disabled" in parts:
            continue
        host, _, port = parts[2].rpartition(":")
        weight = int(parts[parts.index("weight") + 1]) if "weight" in parts else 1
        attrs = {"state": "drain"} if weight == 0 else {"state": "ready", "weight": weight}
        attrs["slot"] = slot_index(parts[1])
        out[(proxy, server_key(host.strip("[]"), int(port)))] = attrs
    return out


@dataclass
class FileView:
    """One file text, parsed for markers and for server lines (each on first use)."""

    text: str
    _parsed: ParsedFile | None = field(default=None, repr=False)
    _servers: dict | None = field(default=None, repr=False)

    @property
    def parsed(self) -> ParsedFile:
        if self._parsed is None:
            self._parsed = parse_file(self.text)
        return self._parsed

    @property
    def servers(self) -> dict[tuple[str, str], dict]:
        if self._servers is None:
            self._servers = file_servers(self.text)
        return self._servers


def check_carried(change: Change, view: FileView, kept_invalid: Collection[str] = (),
                  owner: str | None = None) -> str:
    """Raise :class:`NotCarried` unless ``view`` holds ``change`` as the plan meant it;
    return what was found (for logs). ``kept_invalid`` are the services whose block
    failed validation: the file keeps their running block (or leaves them out), so for
    them the file must hold the *old* state. ``owner`` is the service of a server's
    backend."""
    kind, action = change.kind, change.action
    if kind == GLOBAL:
        have = view.parsed.global_attrs
        want = None if action is Action.DELETE else dict(change.new or {})
        if have != want:
            raise NotCarried(f"global part is {have}, the plan meant {want}")
        return "global part"
    if kind == SERVICE:
        name = change.key[0]
        have = view.parsed.services.get(name)
        if name in kept_invalid:
            want = None if change.old is None else dict(change.old)
        else:
            want = None if action is Action.DELETE else dict(change.new or {})
        if have != want:
            raise NotCarried(f"service {name} is {have} in the file, the plan meant {want}")
        return f"service {name}" + (" (invalid: running block kept)"
                                    if name in kept_invalid else "")
    if kind == FILE_SERVER:
        backend, key = change.key
        if owner is not None and owner in kept_invalid:
            return f"server {backend} {key} (service {owner} invalid: not changed)"
        have = view.servers.get((backend, key))
        have = None if have is None else {k: v for k, v in have.items() if k != "slot"}
        want = None if action is Action.DELETE else dict(change.new or {})
        if have != want:
            raise NotCarried(f"server {key} of {backend} is {have} in the file, the plan "
                             f"meant {want}")
        return f"server {backend} {key}"
    raise NotCarried(f"{kind} changes are not carried by the file")
