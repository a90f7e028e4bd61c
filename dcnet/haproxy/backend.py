"""The ``haproxy`` target of ``elbctl plan|apply``: the running HAProxy made to match the model.

Reading: the running file's markers and ``show servers state`` on the admin socket.
Planning: the pure diff, split by :func:`dcnet.haproxy.state.classify` into runtime
changes (server membership, weight, address, drain in a running backend with free
slots) and changes that need a reload (everything else), ended by one step that writes
the file (and reloads when needed); the plan says "N runtime changes, M reloads".

Applying a runtime change sends it on the admin socket. The final step renders the file
with every server in its slot, validates it with ``haproxy -c`` (a bad service keeps its
running block and is named; a bad global part stops everything before HAProxy is
touched), saves ``show servers state`` to the server-state file, keeps the running file
as last known good, replaces the file atomically and, when needed, reloads through the
master socket, waits for the new worker, checks that the reload did not fail (else puts
the last known good file back) and repairs whatever ``show servers state`` shows was lost.

Settings: ``run_dir`` / ``config`` options, or ``DCNET_HAPROXY_RUN_DIR`` /
``DCNET_HAPROXY_CONFIG`` (see :mod:`dcnet.haproxy.paths`).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from dcnet.haproxy import limits
from dcnet.haproxy import state as st
from dcnet.haproxy.check import ConfigInvalid, render_valid
from dcnet.haproxy.layout import ServerSpec, Slots, listeners, skipped_ports, slot_name
from dcnet.haproxy.paths import Paths
from dcnet.haproxy.render import Renderer, digest, parse_file
from dcnet.haproxy.runtime import Runtime
from dcnet.plan import Action, Backend, Change, Plan, State, diff

RELOAD, WRITE = ("reload",), ("write",)


def atomic_write(path: str, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync, then rename over it."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class HAProxyBackend(Backend):
    target = "haproxy"
    kind_order = ("global", "service", "server", "config")

    def __init__(self, run_dir: str | None = None, config: str | None = None,
                 paths: Paths | None = None, log=None):
        self.paths = paths or Paths.from_env(run_dir, config)
        self.runtime = Runtime(self.paths.admin_socket, self.paths.master_socket)
        self.log = log or (lambda text: print(f"haproxy: {text}", file=sys.stderr))
        self._model = None
        self._runtime_ids: set = set()
        self._layouts: dict[str, Slots] = {}
        self._live: dict[str, list[str | None]] = {}
        self._notes: tuple[str, ...] = ()
        self.repairs = 0

    # ------------------------------------------------------------------ reading

    def running_file(self) -> str:
        try:
            with open(self.paths.config) as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def _read_all(self):
        parsed = parse_file(self.running_file())
        rows = self.runtime.servers()
        return parsed, rows

    def read(self) -> State:
        parsed, rows = self._read_all()
        return st.current_state(parsed, rows)

    def desired(self, model) -> State:
        return st.desired_state(model, Renderer(model, self.paths))

    def notes(self) -> tuple[str, ...]:
        return self._notes

    # ------------------------------------------------------------------ planning

    def plan(self, model) -> Plan:
        parsed, rows = self._read_all()
        current = st.current_state(parsed, rows)
        owned = {b for name, attrs in parsed.services.items() for b in st.backends_of(name, attrs)}
        live = st.live_slots(rows, owned)
        changes = diff(current, self.desired(model))
        split = st.classify(changes, model, live)
        self._model, self._layouts = model, split.layouts
        self._live = {b: list(slots) for b, slots in live.items()}
        self._runtime_ids = {(c.kind, c.key) for c in split.runtime}
        notes = [f"{len(split.runtime)} runtime changes, {1 if split.reload else 0} reloads"]
        final: list[Change] = []
        old_digest = digest(self.running_file())
        if split.reload:
            checked = render_valid(model, self.paths, split.layouts, fallback=parsed.blocks)
            for name, errors in sorted(checked.bad.items()):
                kept = "its running configuration is kept" if name in parsed.blocks else \
                    "it is left out"
                notes.append(f"service {name} is invalid ({'; '.join(errors)}); {kept}")
            too_many = limits.problem(checked.rendered.text, self._master_pid())
            if too_many:  # the new worker would not start: refuse the plan, as for -c
                raise ConfigInvalid([too_many], "the model")
            new = {"file": digest(checked.rendered.text)}
            if checked.bad:
                new["kept_invalid"] = sorted(checked.bad)
            final.append(Change(Action.UPDATE, "config", RELOAD, old={"file": old_digest},
                                new=new))
        elif split.runtime:
            final.append(Change(Action.UPDATE, "config", WRITE, old={"file": old_digest},
                                new={"file": "servers as running"}))
        notes += [f"skipped {port}: HAProxy does not balance UDP/SCTP"
                  for port in skipped_ports(model)]
        self._notes = tuple(notes)
        return Plan(self.target, (*split.runtime, *split.reload, *final), self._notes)

    # ------------------------------------------------------------------ applying

    def apply_change(self, change: Change) -> None:
        if change.kind == "config":
            if change.key == RELOAD and change.action is Action.UPDATE:
                self._write_and_reload(reload=True)
            elif change.key == RELOAD:        # undo of a reload: back to last known good
                self._restore_last_known_good()
            else:
                self._write_and_reload(reload=False)
        elif change.kind == "server" and (change.kind, change.key) in self._runtime_ids:
            self._runtime_server(change)
        # other changes (global, service, servers of new backends) are carried by the
        # final step's file and reload

    def undo_change(self, change: Change) -> None:
        if change.kind == "config" and change.key == WRITE:
            return
        if change.kind == "server" and (change.kind, change.key) not in self._runtime_ids:
            return
        self.apply_change(change.inverse())

    def _spec(self, backend: str, key: str, attrs) -> ServerSpec:
        address, _, port = key.rpartition(":")
        state = attrs.get("state", "ready")
        return ServerSpec(address.strip("[]"), int(port), attrs.get("weight", 0), state)

    def _runtime_server(self, change: Change) -> None:
        backend, key = change.key
        slots = self._live.setdefault(backend, [])
        if change.action is Action.DELETE:
            if key in slots:
                index = slots.index(key)
                self.runtime.set_server(backend, slot_name(index), state="maint")
                slots[index] = None
            return
        spec = self._spec(backend, key, change.new)
        if key in slots:
            index = slots.index(key)
            self._set_weight_state(backend, index, spec)
            return
        target = self._layouts.get(backend, ())
        index = target.index(key) if key in target else None
        if index is None or index >= len(slots):
            free = [i for i, k in enumerate(slots) if k is None]
            if not free:
                raise RuntimeError(f"backend {backend} has no free server slot for {key}")
            index = free[0]
        self.runtime.set_server(backend, slot_name(index), address=spec.address, port=spec.port)
        self._set_weight_state(backend, index, spec)
        slots[index] = key

    def _set_weight_state(self, backend: str, index: int, spec: ServerSpec) -> None:
        if spec.state == "drain":
            self.runtime.set_server(backend, slot_name(index), state="drain")
        else:
            self.runtime.set_server(backend, slot_name(index), weight=spec.weight,
                                    state="ready")

    # ------------------------------------------------------------------ file and reload

    def _render_checked(self) -> str:
        model = self._model
        parsed = parse_file(self.running_file())
        layouts = dict(self._layouts)
        for backend, slots in self._live.items():
            if backend in layouts and len(slots) >= len(layouts[backend]):
                layouts[backend] = tuple(slots)   # exactly what runs now
        checked = render_valid(model, self.paths, layouts, fallback=parsed.blocks)
        for name, errors in checked.bad.items():
            self.log(f"service {name} is invalid, not applied: {'; '.join(errors)}")
        too_many = limits.problem(checked.rendered.text, self._master_pid())
        if too_many:  # the new worker could not start: refuse before writing anything
            raise ConfigInvalid([too_many], "the model")
        self._layouts = layouts
        return checked.rendered.text

    def _master_pid(self) -> int | None:
        try:
            return self.runtime.proc().master_pid
        except Exception:  # not running: the running-check of apply reports that
            return None

    def _save_server_state(self) -> None:
        from dcnet.haproxy.runtime import send

        atomic_write(self.paths.state_file, send(self.paths.admin_socket, "show servers state"),
                     mode=0o600)

    def _write_and_reload(self, reload: bool) -> None:
        text = self._render_checked()      # raises ConfigInvalid before anything is written
        self._save_server_state()
        running = self.running_file()
        if running:
            atomic_write(self.paths.last_known_good, running)
        atomic_write(self.paths.config, text)
        if not reload:
            return
        try:
            self.runtime.reload()
        except Exception:
            self._restore_last_known_good()
            raise
        self.repair()
        self._save_server_state()

    def _restore_last_known_good(self) -> None:
        if not os.path.exists(self.paths.last_known_good):
            raise ConfigInvalid(["no last known good file"], self.paths.last_known_good)
        shutil.copyfile(self.paths.last_known_good, self.paths.config)
        self.runtime.reload()

    def repair(self) -> int:
        """Make every slot match the layout again (changes lost in a reload); returns count."""
        rows = self.runtime.servers()
        desired = {item.name: {s.key: s for s in item.servers} for item in listeners(self._model)}
        by_slot = {(r.backend, r.server): r for r in rows}
        fixed = 0
        for backend, slots in self._layouts.items():
            for index, key in enumerate(slots):
                row = by_slot.get((backend, slot_name(index)))
                if row is None:
                    continue
                if key is None:
                    if not row.free:
                        self.runtime.set_server(backend, row.server, state="maint")
                        fixed += 1
                    continue
                spec = desired.get(backend, {}).get(key)
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
            self._live[backend] = list(slots)
        if fixed:
            self.log(f"repaired {fixed} server slot(s) after the reload")
        self.repairs += fixed
        return fixed


def create(**options) -> HAProxyBackend:
    """Factory for :mod:`dcnet.backends`."""
    return HAProxyBackend(**options)
