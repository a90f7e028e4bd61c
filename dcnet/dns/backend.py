"""The ``dns`` target of ``elbctl plan|apply``: BIND views kept in step with the model.

State (what :meth:`DNSBackend.read` reports and :meth:`DNSBackend.desired` asks for):
``server`` (the options and control channel, by digest), one ``acl`` per carrier list
(prefix count and digest), one ``view`` per carrier (position and match), one ``zone`` per
view (own file with SOA serial and content digest, or ``in-view`` of an earlier view).

:meth:`DNSBackend.plan` refuses overlapping carrier lists and, unless forced, lists that
change more than 30% of a carrier's installed prefixes; renders the bundle; and, when
anything changes, runs named-checkzone and named-checkconf -z on a staged copy, so a bad
configuration never reaches named. Its notes say which rndc commands apply will issue:
``rndc reconfig`` when the server settings, an ACL, a view or a zone declaration changes,
``rndc reload ZONE IN VIEW`` for each zone whose content changes.

Applying: the first change checks that named answers rndc, then installs every file
(each atomically, zone files first, named.conf last); each change then issues its rndc
command (one reconfig at most). Undo puts the previous files back and issues the same
commands again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
from collections.abc import Iterable

from dcnet.dns import bind, carriers, installed
from dcnet.dns.layout import Layout, layout
from dcnet.dns.output import client_lists
from dcnet.dns.render import NAMED_CONF, Bundle, render
from dcnet.dns.settings import Settings, from_env
from dcnet.plan import Action, Backend, Change, Plan, State, diff

RECONFIG_KINDS = ("server", "acl", "view")


def prefixes_digest(prefixes: Iterable) -> str:
    text = "\n".join(sorted(str(p) for p in prefixes))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def state_of_layout(lay: Layout, bundle: Bundle) -> dict:
    """The desired state for a rendered bundle."""
    state: dict = {("server", (NAMED_CONF,)): {"digest": bundle.server_digest}}
    for acl in lay.acls:
        state[("acl", (acl.carrier,))] = {"prefixes": len(acl.prefixes),
                                          "digest": prefixes_digest(acl.prefixes)}
    for position, view in enumerate(lay.views):
        state[("view", (view.name,))] = {"position": position, "match": view.match}
    for z in lay.zones:
        if z.file is None:
            state[("zone", z.key)] = {"in_view": z.in_view}
        else:
            state[("zone", z.key)] = {"file": z.file, "serial": bundle.serials[z.key],
                                      "digest": z.data.digest()[:12]}
    return state


def state_of_installed(config: installed.InstalledConfig) -> dict:
    if not config.present:
        return {}
    state: dict = {("server", (NAMED_CONF,)): {"digest": config.server_digest}}
    for carrier, prefixes in config.acls.items():
        state[("acl", (carrier,))] = {"prefixes": len(prefixes),
                                      "digest": prefixes_digest(prefixes)}
    for position, (name, match) in enumerate(config.views):
        state[("view", (name,))] = {"position": position, "match": match}
    for key, decl in config.zones.items():
        if decl["file"] is None:
            state[("zone", key)] = {"in_view": decl["in_view"]}
        else:
            found = config.zone_files.get(key)
            state[("zone", key)] = {
                "file": decl["file"], "serial": found.serial if found else None,
                "digest": found.digest[:12] if found and found.digest else None}
    return state


def needs_reconfig(change: Change) -> bool:
    """Server, ACL and view changes, zones added or removed, or declared differently."""
    if change.kind in RECONFIG_KINDS or change.action is not Action.UPDATE:
        return True
    old, new = change.old or {}, change.new or {}
    return (old.get("file"), old.get("in_view")) != (new.get("file"), new.get("in_view"))


def needs_reload(change: Change) -> bool:
    """A zone with its own file that existed before and whose content changed."""
    return (change.kind == "zone" and change.action is Action.UPDATE
            and bool((change.new or {}).get("file")))


def rndc_commands(changes: Iterable[Change]) -> list[str]:
    """The rndc commands an apply of ``changes`` issues, in order (for the plan notes)."""
    out: list[str] = []
    for change in changes:
        if needs_reconfig(change) and "rndc reconfig" not in out:
            out.append("rndc reconfig")
        if needs_reload(change):
            out.append(f"rndc reload {change.key[1]} IN {change.key[0]}")
    return out


class DNSBackend(Backend):
    target = "dns"
    kind_order = ("server", "acl", "view", "zone")

    def __init__(self, settings: Settings, today: dt.date | None = None):
        self.settings = settings
        self.directory = settings.directory
        self.today = today
        self.rndc = bind.Rndc(settings.server.key_file or "", settings.server.control_address,
                              settings.server.control_port, settings.netns)
        self.commands: list[str] = []           # rndc commands issued, in order
        self._installed = installed.InstalledConfig()
        self._bundle: Bundle | None = None
        self._notes: tuple[str, ...] = ()
        self._reset_apply()

    def _reset_apply(self) -> None:
        self._backup: dict[str, str | None] | None = None
        self._reconfigured = False
        self._restored = False
        self._undo_reconfigured = False
        self._issued_at_install = 0

    # -- read / desire / plan

    def read(self) -> State:
        self._installed = installed.read_directory(self.directory)
        return state_of_installed(self._installed)

    def bundle(self, model) -> Bundle:
        """Render the model with serials continuing from what is installed (pure given
        the last :meth:`read`)."""
        lay = layout(model)
        return render(lay, self.settings.server, source=model.source,
                      installed=self._installed.zone_files, today=self.today)

    def desired(self, model) -> State:
        self._bundle = self.bundle(model)
        return state_of_layout(self._bundle.layout, self._bundle)

    def check_carrier_lists(self, model) -> list[carriers.ListChange]:
        carriers.check_overlaps(model.carriers)
        return carriers.change_guard(self._installed.acls, client_lists(model),
                                     force=self.settings.force)

    def plan(self, model) -> Plan:
        key = self.settings.server.key_file
        if not key or not os.path.exists(key):
            raise bind.BindError(f"rndc key file {key} does not exist; create it with "
                                 f"'rndc-confgen -a -c {key}' and start named with the "
                                 "rendered named.conf (or set DCNET_DNS_RNDC_KEY)")
        current = self.read()
        forced = self.check_carrier_lists(model)
        desired = self.desired(model)
        changes = diff(current, desired)
        assert self._bundle is not None
        if changes:
            os.makedirs(self.directory, exist_ok=True)
            bind.check_bundle(self._bundle, self.directory, model.source)
        notes = [*self._bundle.layout.notes,
                 *(f"forced: {c}" for c in forced),
                 *(f"apply runs: {cmd}" for cmd in rndc_commands(
                     Plan.build(self.target, changes, self.kind_order).changes))]
        if changes:
            notes.append("checked: named-checkzone and named-checkconf -z accept the "
                         "rendered files")
        self._notes = tuple(notes)
        self._reset_apply()
        return Plan.build(self.target, changes, self.kind_order, self._notes)

    def notes(self) -> tuple[str, ...]:
        return self._notes

    # -- apply

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _read_text(self, name: str) -> str | None:
        try:
            with open(self._path(name), encoding="utf-8") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def _install(self) -> None:
        """Check named answers, back up, then install every file of the bundle."""
        if self._bundle is None:
            raise RuntimeError("apply without a plan: call plan(model) first")
        try:
            self.rndc.status()
        except bind.NamedDown as exc:
            raise bind.NamedDown(f"{exc} Nothing was installed.") from None
        old_files = [NAMED_CONF, *(d["file"] for d in self._installed.zones.values()
                                   if d["file"])]
        names = set(old_files) | set(self._bundle.files())
        self._backup = {name: self._read_text(name) for name in sorted(names)}
        self._issued_at_install = len(self.commands)
        for name, text in self._bundle.zone_files.items():
            if self._backup.get(name) != text:
                bind.install_file(self._path(name), text)
        if self._backup.get(NAMED_CONF) != self._bundle.named_conf:
            bind.install_file(self._path(NAMED_CONF), self._bundle.named_conf)

    def _rndc(self, command: str, *args: str) -> None:
        getattr(self.rndc, command)(*args)
        self.commands.append(" ".join(["rndc", command, *args[:1],
                                       *(["IN", args[1]] if len(args) > 1 else [])]))

    def apply_change(self, change: Change) -> None:
        issued = len(self.commands)
        try:
            if self._backup is None:
                self._install()
            if needs_reconfig(change) and not self._reconfigured:
                self._rndc("reconfig")
                self._reconfigured = True
            if needs_reload(change):
                self._rndc("reload", change.key[1], change.key[0])
        except Exception:
            if self._applied_none(issued):
                self._restore_files()   # named loaded nothing new: put the files back
            raise
        self._remove_stale_file(change)

    def _applied_none(self, issued_before: int) -> bool:
        since_install = self.commands[self._issued_at_install:issued_before]
        return self._backup is not None and not self._reconfigured and not any(
            c.startswith("rndc reload") for c in since_install)

    def _remove_stale_file(self, change: Change) -> None:
        """After reconfig: the zone file a zone no longer uses (removed or now shared)."""
        if change.kind != "zone" or self._bundle is None:
            return
        old_file = (change.old or {}).get("file")
        if old_file and old_file not in self._bundle.zone_files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(old_file))

    def undo_change(self, change: Change) -> None:
        if self._backup is None:
            return                      # nothing was installed
        self._restore_files()
        if needs_reconfig(change) and not self._undo_reconfigured:
            self._rndc("reconfig")
            self._undo_reconfigured = True
        if change.action is Action.UPDATE and (change.old or {}).get("file"):
            self._rndc("reload", change.key[1], change.key[0])

    def _restore_files(self) -> None:
        """Put back every file as it was before the install (once)."""
        if self._backup is None or self._restored:
            return
        for name, text in self._backup.items():
            if text is None:
                if os.path.exists(self._path(name)):
                    os.unlink(self._path(name))
            elif self._read_text(name) != text:
                bind.install_file(self._path(name), text)
        self._restored = True


def backend(**options) -> DNSBackend:
    """Factory for :mod:`dcnet.backends`: options from ``elbctl`` (see
    :mod:`dcnet.dns.cli`), else DCNET_DNS_* environment variables."""
    from dcnet.dns.cli import current_options

    return DNSBackend(from_env(**{**current_options(), **options}))
