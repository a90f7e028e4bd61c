"""The ``haproxy`` target: the running HAProxy made to match the model.

Reading: the running file's markers and ``show servers state`` on the admin socket; the
read fingerprint is a digest of both (:func:`read_fingerprint`). Planning: the pure diff,
split by :func:`dcnet.haproxy.state.classify` into changes the runtime API makes
(``server``: membership, weight, address, drain in a running backend with free slots)
and changes the file carries (``global``, ``service``, ``file-server``: a server of a new
or growing backend), plus one final ``config`` step: ``config reload`` when the file
carries changes, ``config write`` when only runtime changes were made (so that a later
reload keeps them). The file is rendered and validated (``haproxy -c``, the maxconn /
descriptor limit of :mod:`dcnet.haproxy.limits`) while planning; the plan's payload
(:class:`HAProxyPayload`) holds it with the layouts and slots apply needs.

Order (the kind order ``global, service, file-server, server, config``; deletes after,
in reverse): file-borne changes are *staged* (each is checked against the validated
text and recorded), runtime changes go to the admin socket (adds, updates, then
removals), then ``config`` refuses to run unless every file-borne change was staged,
saves ``show servers state`` to the server-state file, keeps the running file as last
known good, replaces the file atomically, reads it back and checks that it carries every
staged change, and (``reload``) reloads through the master socket, waits for the new
worker, puts the last known good file back when the reload fails, and repairs whatever
``show servers state`` shows was lost. Deletes come last: a removed service's step
checks that the file and HAProxy no longer have it; a removed server is drained first
like ``backend remove`` (:func:`dcnet.haproxy.drain.drain_removals`), then put in
maintenance; one the reload removes is waited for in the old workers (``drain_reloaded``).
Undo runs in reverse (last known good back, runtime changes reverted).

Backends changed by ``elbctl backend`` (:mod:`dcnet.backendfile`, in the run
directory) are merged into every model planned, and the model of each successful apply
is recorded there for ``elbctl backend`` to plan against.

Options: ``run_dir`` (``--haproxy-run-dir``, ``$DCNET_HAPROXY_RUN_DIR``) and ``config``
(``--haproxy-config``, ``$DCNET_HAPROXY_CONFIG``), see :mod:`dcnet.haproxy.paths`; the
lock file is ``<run dir>/elbctl.lock``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from dcnet.backendfile import BackendFile
from dcnet.elbstore.effective import effective_model
from dcnet.haproxy import drain, drift, limits
from dcnet.haproxy import state as st
from dcnet.haproxy.carry import (
    FILE_KINDS,
    FILE_SERVER,
    SERVICE,
    FileView,
    NotCarried,
    check_carried,
)
from dcnet.haproxy.check import ConfigInvalid, render_valid
from dcnet.haproxy.layout import ServerSpec, Slots, listeners, skipped_ports, slot_name
from dcnet.haproxy.options import OPTIONS
from dcnet.haproxy.paths import Paths
from dcnet.haproxy.render import Renderer, TemplateError, digest, parse_file
from dcnet.haproxy.runtime import (
    HAProxyUnavailable,
    ReloadFailed,
    Runtime,
    RuntimeCommandError,
    ServerRow,
)
from dcnet.haproxy.state import read_fingerprint
from dcnet.model import Model
from dcnet.plan import Action, Change, Plan, State, diff
from dcnet.sysio.files import atomic_write
from dcnet.target import Snapshot, Target

SERVER, CONFIG = "server", "config"
RELOAD, WRITE = ("reload",), ("write",)


class ApplyStepError(RuntimeError):
    """A step of a HAProxy plan cannot run (out of order, or its slot is gone)."""


def _frozen(mapping: Mapping) -> MappingProxyType:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class HAProxyPayload:
    """Everything applying a HAProxy plan needs (immutable)."""

    model: Model
    layouts: Mapping[str, Slots]           # backend -> slots after the plan
    live: Mapping[str, Slots]              # backend -> slots as read
    running: Mapping[tuple[str, str], Mapping]   # (backend, key) -> attrs as read
    owners: Mapping[str, str]              # backend -> service
    specs: Mapping[str, Mapping[str, ServerSpec]]   # backend -> key -> wanted server
    text: str | None = None                # the validated file the config step writes
    reload: bool = False
    kept_invalid: tuple[str, ...] = ()     # services whose running block is kept
    source: Model | None = None            # the model as given (before the registry)

    def spec(self, backend: str, key: str) -> ServerSpec | None:
        return self.specs.get(backend, {}).get(key)


@dataclass
class _Applying:
    """What one apply builds up: the slots as changed so far and the staged changes."""

    plan: Plan
    slots: dict[str, list[str | None]]
    staged: dict[tuple[str, tuple], str] = field(default_factory=dict)
    view: FileView | None = None          # the plan's validated file
    written: FileView | None = None       # the file as the config step read it back
    drained: bool = False                 # the plan's removals were drained


@dataclass(frozen=True)
class _Read:
    text: str
    rows: list[ServerRow]
    registry: Mapping = field(default_factory=dict)

    @property
    def parsed(self):
        return parse_file(self.text)


class HAProxyTarget(Target):
    """See the module docstring."""

    name = "haproxy"
    kind_order = ("global", SERVICE, FILE_SERVER, SERVER, CONFIG)
    options = OPTIONS
    refused_errors = (ConfigInvalid, TemplateError, ReloadFailed, RuntimeCommandError,
                      NotCarried, ApplyStepError)
    unavailable_errors = (HAProxyUnavailable,)

    def __init__(self, run_dir: str | None = None, config: str | None = None, *, log=None,
                 runtime=None):
        self.paths = Paths.from_env(run_dir, config)
        # runtime: a stand-in for unit tests (dcnet.haproxy.fake.FakeRuntime)
        self.runtime = runtime or Runtime(self.paths.admin_socket, self.paths.master_socket)
        self.log = log or (lambda text: print(f"haproxy: {text}", file=sys.stderr))
        self.file_writes = 0
        self.repairs = 0
        self._applying: _Applying | None = None
        self.backends = BackendFile(self.paths.run_dir, self.name)

    def lock_path(self) -> str:
        return os.path.join(self.paths.run_dir, "elbctl.lock")

    def counters(self) -> dict[str, int]:
        return {"runtime commands": self.runtime.commands, "file writes": self.file_writes,
                "reloads": self.runtime.reloads, "repaired slots": self.repairs}

    # ------------------------------------------------------------------ reading

    def running_file(self) -> str:
        try:
            with open(self.paths.config) as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def _read_raw(self) -> _Read:
        rows = self.runtime.servers()      # first: HAProxy down is the clearer error
        return _Read(self.running_file(), rows, self.backends.registry())

    def read(self, model=None) -> Snapshot:
        raw = self._read_raw()
        return Snapshot(st.current_state(raw.parsed, raw.rows),
                        digest=read_fingerprint(raw.text, raw.rows, raw.registry))

    def desired(self, model, current: Snapshot | None = None) -> State:
        return st.desired_state(model, Renderer(model, self.paths))

    def current_digest(self, plan: Plan) -> str:
        raw = self._read_raw()
        return read_fingerprint(raw.text, raw.rows, raw.registry)

    def wait_drained(self, model: Model, service: str, ident: str, **watch):
        """After an apply drained ``ident`` of ``service``: wait until it has no session or
        ``drain_deadline`` passed, then shut its sessions down (``watch``: drain_server's)."""
        return drain.drain_server(self.runtime, model, service, ident, **watch)

    def _master_pid(self) -> int | None:
        try:
            return self.runtime.proc().master_pid
        except HAProxyUnavailable:
            return None

    def drifted(self, pieces) -> bool:
        """Whether a plan of the model would change anything, a piece at a time
        (:mod:`dcnet.haproxy.drift`)."""
        return drift.drifted(self, pieces)

    # ------------------------------------------------------------------ planning

    def plan(self, model) -> Plan:
        raw = self._read_raw()
        source, model = model, effective_model(model, raw.registry)
        parsed = raw.parsed
        current = st.current_state(parsed, raw.rows)
        owned = {b for name, attrs in parsed.services.items() for b in st.backends_of(name, attrs)}
        live = st.live_slots(raw.rows, owned)
        master = self._master_pid()      # maxconn by default fits the master's limit
        renderer = Renderer(model, self.paths, nofile_pid=master)
        split = st.classify(diff(current, st.desired_state(model, renderer)), model, live)
        # servers of a backend the reload removes go with the file, not the runtime API
        runtime = [c for c in split.runtime if c.key[0] in split.layouts]
        carried = [Change(c.action, FILE_SERVER, c.key, c.old, c.new) if c.kind == SERVER
                   else c for c in (*split.reload, *(c for c in split.runtime
                                                      if c.key[0] not in split.layouts))]
        notes = [f"{len(runtime)} runtime changes, {1 if carried else 0} reloads"]
        changes = [*runtime, *carried]
        text, bad = None, {}
        if changes:
            checked = render_valid(model, self.paths, split.layouts, fallback=parsed.blocks,
                                   renderer=renderer)
            text, bad = checked.rendered.text, checked.bad
            if checked.warning:
                notes.append(checked.warning)
            for name, errors in sorted(bad.items()):
                kept = "its running configuration is kept" if name in parsed.blocks else \
                    "it is left out"
                notes.append(f"service {name} is invalid ({'; '.join(errors)}); {kept}")
            too_many = limits.problem(text, master)
            if too_many:  # the new worker would not start: refuse the plan, as for -c
                raise ConfigInvalid([too_many], "the model")
            new = {"file": digest(text)}
            if bad:
                new["kept_invalid"] = sorted(bad)
            changes.append(Change(Action.UPDATE, CONFIG, RELOAD if carried else WRITE,
                                  old={"file": digest(raw.text)}, new=new))
        notes += [f"skipped {port}: HAProxy does not balance UDP/SCTP"
                  for port in skipped_ports(model)]
        items = listeners(model)
        payload = HAProxyPayload(
            model=model,
            layouts=_frozen({b: tuple(s) for b, s in split.layouts.items()}),
            live=_frozen({b: tuple(s) for b, s in live.items()}),
            running=_frozen({(r.backend, r.key): _frozen(r.attrs()) for r in raw.rows
                             if r.backend in owned and not r.free}),
            owners=_frozen({item.name: item.service.name for item in items}),
            specs=_frozen({item.name: _frozen({s.key: s for s in item.servers})
                           for item in items}),
            text=text, reload=bool(carried), kept_invalid=tuple(sorted(bad)), source=source)
        return Plan.build(self.name, changes, self.kind_order, tuple(notes),
                          read_digest=read_fingerprint(raw.text, raw.rows, raw.registry),
                          objects=len(current), payload=payload)

    # ------------------------------------------------------------------ applying

    def begin(self, plan: Plan) -> None:
        self._applying = _Applying(plan, {b: list(s) for b, s in plan.payload.live.items()})

    def _state(self, plan: Plan) -> _Applying:
        if self._applying is None or self._applying.plan is not plan:
            self.begin(plan)
        return self._applying

    def finish(self, plan: Plan, result) -> None:
        try:
            configs = [i for i, c in enumerate(result.applied) if c.kind == CONFIG]
            if configs and configs[-1] < len(result.applied) - 1 and not result.undone:
                self._save_server_state()     # removals came after the config step
            if result.ok and plan.payload.source is not None:
                self.backends.save_model(plan.payload.source)
        finally:
            self._applying = None

    def apply_change(self, change: Change, plan: Plan) -> None:
        if change.kind == SERVER:
            self._runtime_server(change, plan)
        elif change.kind in FILE_KINDS:
            self._file_change(change, plan)
        elif change.kind == CONFIG and change.action is Action.UPDATE:
            self._write_file(change, plan)
        else:
            raise ApplyStepError(f"a haproxy plan has no step {change.describe()}")

    def undo_change(self, change: Change, plan: Plan) -> None:
        now = self._state(plan)
        if change.kind in FILE_KINDS:
            now.staged.pop((change.kind, change.key), None)   # the config undo restores
        elif change.kind == CONFIG:
            self._restore_last_known_good(reload=change.key == RELOAD)
        elif change.action is Action.CREATE:
            self._undo_server_create(change, plan)
        elif change.action is Action.DELETE:
            self._undo_server_delete(change, plan)
        else:
            self._runtime_server(change.inverse(), plan)

    # ---- file-borne changes: staged, then written and checked by the config step

    def _file_change(self, change: Change, plan: Plan) -> None:
        now, payload = self._state(plan), plan.payload
        owner = payload.owners.get(change.key[0]) if change.kind == FILE_SERVER else None
        if change.action is Action.DELETE:
            # after the config step (deletes come last): the file and HAProxy must no
            # longer have it
            if (CONFIG, RELOAD) not in now.staged:
                raise ApplyStepError(f"{change.describe()}: the config reload has not run")
            found = check_carried(change, now.written or FileView(self.running_file()),
                                  payload.kept_invalid, owner)
            if change.kind == SERVICE and change.key[0] not in payload.kept_invalid:
                gone = set(st.backends_of(change.key[0], change.old or {}))
                left = sorted({r.backend for r in self.runtime.servers() if r.backend in gone})
                if left:
                    raise NotCarried(f"HAProxy still runs {', '.join(left)} after the reload")
            now.staged[(change.kind, change.key)] = found
            return
        if now.view is None:
            now.view = FileView(payload.text or "")
        now.staged[(change.kind, change.key)] = check_carried(
            change, now.view, payload.kept_invalid, owner)

    def _write_file(self, change: Change, plan: Plan) -> None:
        now, payload = self._state(plan), plan.payload
        carried = [c for c in plan.changes if c.kind in FILE_KINDS and c.action is not
                   Action.DELETE]
        missing = [c.describe() for c in carried if (c.kind, c.key) not in now.staged]
        if missing:
            raise ApplyStepError("config step before its changes were staged: "
                                 + "; ".join(missing))
        if payload.text is None or digest(payload.text) != change.new["file"]:
            raise ApplyStepError("the plan's file does not match its config step")
        self._save_server_state()
        running = self.running_file()
        if running:
            atomic_write(self.paths.last_known_good, running)
        atomic_write(self.paths.config, payload.text)
        self.file_writes += 1
        try:
            written = FileView(self.running_file())
            if digest(written.text) != change.new["file"]:
                raise NotCarried(f"{self.paths.config} changed while it was written")
            for c in carried:
                check_carried(c, written, payload.kept_invalid,
                              payload.owners.get(c.key[0]) if c.kind == FILE_SERVER else None)
        except Exception:
            self._restore_last_known_good(reload=False)
            raise
        if change.key == RELOAD:
            try:
                self.runtime.reload()
            except Exception:
                self._restore_last_known_good(reload=True)
                raise
            self.repair(plan)
            self._save_server_state()
            drain.drain_reloaded(self.runtime, plan.changes,
                                 payload.model.haproxy.drain_deadline, self.log)
        now.staged[(CONFIG, change.key)] = "written"
        now.written = written

    def _save_server_state(self) -> None:
        atomic_write(self.paths.state_file, self.runtime.command("show servers state") + "\n",
                     mode=0o600)

    def _restore_last_known_good(self, reload: bool) -> None:
        if not os.path.exists(self.paths.last_known_good):
            raise ConfigInvalid(["no last known good file"], self.paths.last_known_good)
        with open(self.paths.last_known_good) as handle:
            atomic_write(self.paths.config, handle.read())
        self.file_writes += 1
        if reload:
            self.runtime.reload()

    # ---- runtime changes: server slots through the admin socket

    def _runtime_server(self, change: Change, plan: Plan) -> None:
        now, payload = self._state(plan), plan.payload
        backend, key = change.key
        slots = now.slots.get(backend)
        if slots is None:
            raise ApplyStepError(f"backend {backend} is not running: {change.describe()} "
                                 "needs a reload")
        if change.action is Action.DELETE:
            if key in slots:
                index = slots.index(key)
                self._drain_removals(plan)
                self.runtime.set_server(backend, slot_name(index), state="maint")
                slots[index] = None
                return
            # its slot was given to a new server earlier in this plan (address change)
            row = self._row(backend, key)
            if row is not None:
                raise ApplyStepError(f"{backend}: {key} still runs in {row.server}")
            return
        spec = _spec(key, change.new)
        if change.action is Action.UPDATE:
            if key not in slots:
                raise ApplyStepError(f"{backend}: {key} is in no slot")
            self._set_weight_state(backend, slots.index(key), spec)
            return
        layout = payload.layouts.get(backend, ())
        index = layout.index(key) if key in layout else None
        if index is None or index >= len(slots):
            raise ApplyStepError(f"backend {backend} has no free server slot for {key}")
        if slots[index] is not None:
            self._drain_removals(plan)        # the slot of a server this plan removes
        self.runtime.set_server(backend, slot_name(index), address=spec.address, port=spec.port)
        self._set_weight_state(backend, index, spec)
        slots[index] = key

    def _drain_removals(self, plan: Plan) -> None:
        """Once per apply: drain the plan's runtime removals, wait (``drain_deadline``)."""
        now = self._state(plan)
        if now.drained:
            return
        now.drained = True
        removals = [(c.key[0], slot_name(now.slots[c.key[0]].index(c.key[1])), c.key[1],
                     (c.old or {}).get("state") == "drain") for c in plan.changes
                    if c.kind == SERVER and c.action is Action.DELETE
                    and c.key[1] in now.slots.get(c.key[0], ())]
        if removals:
            outcome = drain.drain_removals(self.runtime, removals,
                                           plan.payload.model.haproxy.drain_deadline)
            self.log(f"removal of {len(removals)} server(s): {outcome.describe()}")

    def _row(self, backend: str, key: str) -> ServerRow | None:
        return next((r for r in self.runtime.servers(backend) if r.key == key and not r.free), None)

    def _undo_server_create(self, change: Change, plan: Plan) -> None:
        """Free the slot again, or give it back to the server it was taken from."""
        now, payload = self._state(plan), plan.payload
        backend, key = change.key
        slots = now.slots[backend]
        index = slots.index(key)
        before = payload.live[backend][index] if index < len(payload.live[backend]) else None
        if before is None or before == key:
            self.runtime.set_server(backend, slot_name(index), state="maint")
            slots[index] = None
            return
        spec = _spec(before, payload.running[(backend, before)])
        self.runtime.set_server(backend, slot_name(index), address=spec.address, port=spec.port)
        self._set_weight_state(backend, index, spec)
        slots[index] = before

    def _undo_server_delete(self, change: Change, plan: Plan) -> None:
        now, payload = self._state(plan), plan.payload
        backend, key = change.key
        index = payload.live[backend].index(key)
        slots = now.slots[backend]
        if slots[index] is not None:
            return          # the new server's undo (next) gives the slot back to it
        spec = _spec(key, change.old)
        self.runtime.set_server(backend, slot_name(index), address=spec.address, port=spec.port)
        self._set_weight_state(backend, index, spec)
        slots[index] = key

    def _set_weight_state(self, backend: str, index: int, spec: ServerSpec) -> None:
        if spec.state == "drain":
            self.runtime.set_server(backend, slot_name(index), state="drain")
        else:
            self.runtime.set_server(backend, slot_name(index), weight=spec.weight,
                                    state="ready")

    def repair(self, plan: Plan) -> int:
        """Make every slot match the plan's layout again (changes a reload lost)."""
        payload = plan.payload
        by_slot = {(r.backend, r.server): r for r in self.runtime.servers()}
        fixed = 0
        for backend, slots in payload.layouts.items():
            for index, key in enumerate(slots):
                row = by_slot.get((backend, slot_name(index)))
                if row is None:
                    continue
                if key is None:
                    if not row.free:
                        self.runtime.set_server(backend, row.server, state="maint")
                        fixed += 1
                    continue
                spec = payload.spec(backend, key)
                if spec is None:
                    continue
                if row.key != key:
                    self.runtime.set_server(backend, row.server, address=spec.address,
                                            port=spec.port)
                if row.key != key or row.free or row.attrs() != spec.attrs():
                    self._set_weight_state(backend, index, spec)
                    self.log(f"repair {backend}/{row.server}: {row.key} {row.attrs()} -> "
                             f"{key} {spec.attrs()}")
                    fixed += 1
            if self._applying is not None and self._applying.plan is plan:
                self._applying.slots[backend] = list(slots)
        if fixed:
            self.log(f"repaired {fixed} server slot(s) after the reload")
        self.repairs += fixed
        return fixed


def _spec(key: str, attrs: Mapping) -> ServerSpec:
    address, _, port = key.rpartition(":")
    return ServerSpec(address.strip("[]"), int(port), attrs.get("weight", 0),
                      attrs.get("state", "ready"))
