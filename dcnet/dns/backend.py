"""The ``dns`` target of ``elbctl plan|apply``: BIND views kept in step with the model.

State (what :meth:`DNSTarget.read` reports and :meth:`DNSTarget.desired` asks for):
``server`` (the options and control channel, by digest), one ``acl`` per carrier list
(prefix count and digest), one ``view`` per carrier (position and match), one ``zone`` per
view (own file with SOA serial and content digest, or ``in-view`` of an earlier view).

:meth:`DNSTarget.read` reads the BIND directory once (named.conf, its zone files and any
other ``db.*`` file): the snapshot holds their texts, what they say, their fingerprint
and today's date, so :meth:`DNSTarget.desired` (render with serials continuing from what
is installed) is pure. :meth:`DNSTarget.plan` refuses overlapping carrier lists and,
unless ``force``, lists that change more than 30% of a carrier's installed prefixes; and,
when anything changes, runs named-checkzone and named-checkconf -z on a staged copy, so
a bad configuration never reaches named. The plan's payload (:class:`DNSPayload`) holds
the rendered bundle and the previous text of every file apply may touch; its notes say
which rndc commands apply will issue.

Applying (only through :func:`dcnet.target.apply_plan`; nothing is kept on the instance
between plan and apply, a fresh instance applies another's plan): :meth:`begin` checks
that named answers rndc (else :class:`~dcnet.dns.bind.NamedDown`, nothing installed).
The first change that needs ``rndc reconfig`` (server, ACL, view, a zone added, removed
or declared differently) is the *named.conf step*: it installs the zone files of newly
declared zones, then named.conf (each atomically), and issues the one reconfig. Every
later change of those kinds checks that the installed named.conf carries it (read back,
compared with the change) instead of writing it again. A zone whose content changes
installs its own zone file and issues ``rndc reload ZONE IN VIEW``; a zone that loses its
file removes it (after the reconfig). Which change does what is derived from the plan
alone. A change that fails puts back what it wrote; undo of a change puts back the
previous files it touched and re-issues its rndc command (the named.conf step's undo:
previous named.conf, reconfig).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from dcnet.dns import bind, carriers, installed
from dcnet.dns.layout import Layout, LayoutError, layout
from dcnet.dns.output import client_lists
from dcnet.dns.render import NAMED_CONF, Bundle, render
from dcnet.dns.settings import OPTIONS, build
from dcnet.plan import Action, Change, Plan, State, diff
from dcnet.sysio.files import atomic_write
from dcnet.target.base import Snapshot, Target

RECONFIG_KINDS = ("server", "acl", "view")
BASELINE = ".dcnet-carrier-baseline.json"    # carrier lists' baseline (not a named file)


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


def conf_step(plan: Plan) -> Change | None:
    """The change that installs named.conf and issues the one reconfig: the first change
    of the plan that needs a reconfig (None: the plan needs none)."""
    return next((c for c in plan.changes if needs_reconfig(c)), None)


def declared_files(plan: Plan) -> tuple[str, ...]:
    """Zone files named.conf newly declares (created zones, in-view -> own file): the
    named.conf step installs them before named.conf, so reconfig finds them."""
    out = []
    for change in plan.changes:
        new_file = (change.new or {}).get("file") if change.kind == "zone" else None
        if new_file and new_file != (change.old or {}).get("file"):
            out.append(new_file)
    return tuple(out)


def dropped_file(change: Change, bundle: Bundle) -> str | None:
    """The zone file a zone change stops using (zone removed or now shared)."""
    old_file = (change.old or {}).get("file") if change.kind == "zone" else None
    return old_file if old_file and old_file not in bundle.zone_files else None


@dataclass(frozen=True)
class DNSSnapshot(Snapshot):
    """One read of the BIND directory: the texts, what they say, and today's date."""

    config: installed.InstalledConfig = field(default_factory=installed.InstalledConfig)
    files: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    today: dt.date = dt.date.min


@dataclass(frozen=True)
class DNSPayload:
    """What applying a DNS plan needs: the rendered files and, for every file apply may
    write or remove, its text when the plan was read (None: absent)."""

    bundle: Bundle
    previous: Mapping[str, str | None]
    baseline: Mapping[str, tuple[str, ...]] | None = None   # carrier baseline to record


class DNSTarget(Target):
    name = "dns"
    kind_order = ("server", "acl", "view", "zone")
    options = OPTIONS
    refused_errors = (carriers.CarrierListError, LayoutError, bind.BindError,
                      installed.InstalledError)
    unavailable_errors = (bind.NamedDown,)

    def __init__(self, directory: str | None = None, force: bool = False,
                 key_file: str | None = None, control: str | None = None,
                 port: int | None = None, listen: str | None = None,
                 ns_address: str | None = None, netns: str | None = None, *,
                 today: dt.date | None = None, rndc: bind.Rndc | None = None):
        self.settings = build(**{k: v for k, v in dict(
            directory=directory, force=force, key_file=key_file, control=control,
            port=port, listen=listen, ns_address=ns_address, netns=netns).items()
            if v is not None})
        self.directory = self.settings.directory
        self.today = today      # None: the date of each read
        server = self.settings.server
        # ``rndc``: a stand-in for tests (dcnet.dns.fake.FakeRndc); not an option
        self.rndc = rndc or bind.Rndc(server.key_file or "", server.control_address,
                                      server.control_port, self.settings.netns)
        self.commands: list[str] = []           # rndc commands issued, in order (a log)
        self.file_writes = 0                    # files installed or removed

    # -- session

    def lock_path(self) -> str:
        os.makedirs(self.directory, exist_ok=True)      # not 0700: named reads it
        return os.path.join(self.directory, ".dcnet-dns.lock")

    # -- read / desire / plan

    def read(self, model=None) -> DNSSnapshot:
        files = installed.read_files(self.directory)
        config = installed.parse_files(files, self._path(NAMED_CONF))
        return DNSSnapshot(state_of_installed(config), (),
                           installed.files_digest(self.directory, files), config,
                           MappingProxyType(files), self.today or dt.date.today())

    def current_digest(self, plan: Plan) -> str:
        return installed.files_digest(self.directory, installed.read_files(self.directory))

    def bundle(self, model, current: DNSSnapshot) -> Bundle:
        """Render the model with serials continuing from what is installed (pure)."""
        return render(layout(model), self.settings.server, source=model.source,
                      installed=current.config.zone_files, today=current.today)

    def desired(self, model, current: DNSSnapshot) -> State:
        bundle = self.bundle(model, current)
        return state_of_layout(bundle.layout, bundle)

    def check_carrier_lists(self, model, current: DNSSnapshot) -> list:
        carriers.check_overlaps(model.carriers)
        lists = client_lists(model)
        return [*carriers.change_guard(current.config.acls, lists, force=self.settings.force),
                *carriers.baseline_guard(self._baseline(), lists, force=self.settings.force)]

    def _baseline(self) -> dict:
        """The carrier lists' recorded baseline (:func:`dcnet.dns.carriers.baseline_guard`)."""
        try:
            with open(self._path(BASELINE), encoding="utf-8") as fh:
                return json.load(fh)
        except FileNotFoundError:
            return {}

    def finish(self, plan: Plan, result) -> None:
        record = plan.payload.baseline
        data = {k: list(v) for k, v in (record or {}).items()}
        if result.ok and record is not None and data != self._baseline():
            os.makedirs(self.directory, exist_ok=True)
            atomic_write(self._path(BASELINE), json.dumps(data, sort_keys=True), mode=0o600)

    def make_payload(self, current: DNSSnapshot, bundle: Bundle) -> DNSPayload:
        names = set(current.files) | set(bundle.files())
        return DNSPayload(bundle, MappingProxyType(
            {name: current.files.get(name) for name in sorted(names)}))

    def plan(self, model) -> Plan:
        key = self.settings.server.key_file
        if not key or not os.path.exists(key):
            raise bind.BindError(f"rndc key file {key} does not exist; create it with "
                                 f"'rndc-confgen -a -c {key}' and start named with the "
                                 "rendered named.conf (or give --dns-rndc-key / "
                                 "DCNET_DNS_RNDC_KEY)")
        current = self.read(model)
        forced = self.check_carrier_lists(model, current)
        bundle = self.bundle(model, current)
        changes = diff(current.state, state_of_layout(bundle.layout, bundle))
        if changes:
            os.makedirs(self.directory, exist_ok=True)
            bind.check_bundle(bundle, self.directory, model.source)
        ordered = Plan.build(self.name, changes, self.kind_order).changes
        notes = [*bundle.layout.notes,
                 *(f"forced: {c}" for c in forced),
                 *(f"apply runs: {cmd}" for cmd in rndc_commands(ordered))]
        if changes:
            notes.append("checked: named-checkzone and named-checkconf -z accept the "
                         "rendered files")
        record = carriers.next_baseline(self._baseline(), client_lists(model),
                                        bool(self.settings.force))
        payload = dataclasses.replace(self.make_payload(current, bundle), baseline=(
            MappingProxyType({k: tuple(v) for k, v in record.items()})))
        return Plan.build(self.name, changes, self.kind_order, tuple(notes),
                          read_digest=current.digest, objects=len(current.state),
                          payload=payload)

    # -- apply

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _read_text(self, name: str) -> str | None:
        try:
            with open(self._path(name), encoding="utf-8") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def _put(self, name: str, text: str | None) -> None:
        """Make file ``name`` hold ``text`` (None: absent); no write when it already does."""
        if text is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(name))
                self.file_writes += 1
        elif self._read_text(name) != text:
            bind.install_file(self._path(name), text)
            self.file_writes += 1

    def _rndc(self, command: str, *args: str) -> None:
        getattr(self.rndc, command)(*args)
        self.commands.append(" ".join(["rndc", command, *args[:1],
                                       *(["IN", args[1]] if len(args) > 1 else [])]))

    def counters(self) -> dict[str, int]:
        return {"rndc": len(self.commands), "files": self.file_writes}

    def begin(self, plan: Plan) -> None:
        try:
            self.rndc.status()
        except bind.NamedDown as exc:
            raise bind.NamedDown(f"{exc} Nothing was installed.") from None

    def _touched(self, change: Change, plan: Plan) -> list[str]:
        """The files ``change`` writes or removes, in write order (see the docstring)."""
        bundle: Bundle = plan.payload.bundle
        names = []
        if change == conf_step(plan):
            names += [*declared_files(plan), NAMED_CONF]
        if needs_reload(change) and change.new["file"] not in names:
            names.append(change.new["file"])
        dropped = dropped_file(change, bundle)
        if dropped:
            names.append(dropped)
        return names

    def apply_change(self, change: Change, plan: Plan) -> None:
        bundle: Bundle = plan.payload.bundle
        is_conf = change == conf_step(plan)
        written: list[str] = []
        reconfigured = False
        try:
            if is_conf:
                for name in [*declared_files(plan), NAMED_CONF]:
                    written.append(name)
                    self._put(name, bundle.files()[name])
                self._rndc("reconfig")
                reconfigured = True
            if needs_reload(change):
                name = change.new["file"]
                written.append(name)
                self._put(name, bundle.zone_files[name])
                self._rndc("reload", change.key[1], change.key[0])
        except Exception:
            self._put_back(written, plan, reconfig=reconfigured)
            raise
        dropped = dropped_file(change, bundle)
        if dropped:
            self._put(dropped, None)
        if needs_reconfig(change) and not is_conf:
            self._check_installed(change)

    def _check_installed(self, change: Change) -> None:
        """A change the named.conf step carried: the installed files must say so."""
        state = state_of_installed(installed.read_directory(self.directory))
        have = state.get((change.kind, change.key))
        if (dict(have) if have is not None else None) != change.new:
            raise bind.BindError(
                f"the installed {NAMED_CONF} does not carry {change.describe()} (it has "
                f"{have}); was the BIND directory changed during the apply?")

    def _put_back(self, names: Iterable[str], plan: Plan, reconfig: bool) -> None:
        """Restore ``names`` to their previous texts (deletions after the reconfig)."""
        previous: Mapping[str, str | None] = plan.payload.previous
        names = list(dict.fromkeys(names))
        for name in names:
            if previous.get(name) is not None:
                self._put(name, previous[name])
        try:
            if reconfig:
                self._rndc("reconfig")
        finally:
            for name in names:
                if previous.get(name) is None:
                    self._put(name, None)

    def undo_change(self, change: Change, plan: Plan) -> None:
        """Put back the previous files ``change`` touched and re-issue its command: the
        named.conf step restores named.conf (and the zone files it installed, removed
        after the reconfig) and reconfigs; it is undone last, so the other changes only
        restore the texts they replaced or removed, and a zone whose declaration did not
        change is reloaded from its previous file."""
        touched = self._touched(change, plan)
        if change == conf_step(plan):
            self._put_back(touched, plan, reconfig=True)
            return
        previous = plan.payload.previous
        self._put_back([n for n in touched if previous.get(n) is not None], plan,
                       reconfig=False)
        if needs_reload(change) and not needs_reconfig(change):
            self._rndc("reload", change.key[1], change.key[0])
