"""A stateful fake of HAProxy's runtime API client (:class:`dcnet.haproxy.runtime.Runtime`).

It is the unit tests' stand-in for a running HAProxy: backends with their server slots
(address, port, weight, admin state bits), built from a rendered configuration file
(``server`` and ``server-template`` lines), changed by the same commands the product
sends (``set server ... addr/weight/state``, ``shutdown sessions``) and read back as
``show servers state`` text parsed by the real parser. Admin-state bits follow HAProxy
2.6 as observed: ``maint`` sets forced maintenance and clears drain, ``drain`` sets drain
and clears forced maintenance, ``ready`` clears both; the ``disabled`` bit of a template
slot stays set. ``reload`` bumps the master's counter, starts a new worker and rebuilds
the slots from the configuration file (as HAProxy does without a server-state file).
tests/netns/test_haproxy_runtime_contract.py runs the same tests against this fake and
against a real HAProxy in a lab, so the fake stays honest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from dcnet.haproxy.runtime import (
    ProcInfo,
    RuntimeCommandError,
    ServerRow,
    parse_servers_state,
)

FORCED_MAINT, CONFIG_MAINT, DRAIN = 0x01, 0x04, 0x08
HEADER = ("# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state "
          "srv_uweight srv_port")
MAX_WEIGHT = 256


@dataclass
class _Slot:
    name: str
    address: str
    port: int
    weight: int
    admin: int


def parse_config(text: str) -> dict[str, list[_Slot]]:
    """Backend name -> its servers in id order, from ``server``/``server-template`` lines."""
    out: dict[str, list[_Slot]] = {}
    proxy = None
    for raw in text.splitlines():
        parts = raw.split()
        if not parts or parts[0].startswith("#"):
            continue
        if not raw[0].isspace():
            proxy = parts[1] if parts[0] in ("backend", "listen") and len(parts) > 1 else None
            if proxy is not None:
                out[proxy] = []
            continue
        if proxy is None or parts[0] not in ("server", "server-template") or len(parts) < 3:
            continue
        admin = CONFIG_MAINT | FORCED_MAINT if "disabled" in parts else 0
        weight = int(parts[parts.index("weight") + 1]) if "weight" in parts else 1
        if parts[0] == "server":
            names, where = [parts[1]], parts[2]
        else:
            first, _, last = parts[2].partition("-")
            names = [f"{parts[1]}{i}" for i in range(int(first), int(last or first) + 1)]
            where = parts[3]
        host, _, port = where.rpartition(":")
        for name in names:
            out[proxy].append(_Slot(name, host.strip("[]"), int(port or 0), weight, admin))
    return out


class FakeRuntime:
    """In-memory HAProxy: ``servers/set_server/command/proc/reload`` like :class:`Runtime`."""

    def __init__(self, config_text: str = "", config_path: str | None = None):
        self.config_path = config_path
        if config_path is not None and not config_text:
            with open(config_path) as handle:
                config_text = handle.read()
        self.backends = parse_config(config_text)
        self.commands = 0       # changing runtime API commands (as Runtime counts them)
        self.reloads = 0        # reloads asked for
        self.master_pid, self.failed = os.getpid(), 0    # the master is our child
        self.worker, self.old_workers = 2, []
        self.shutdowns: list[str] = []     # "backend/slot" whose sessions were shut down

    # -- reads

    def text(self, backend: str | None = None) -> str:
        """``show servers state`` as HAProxy prints it (the columns the parser reads)."""
        lines = ["1", HEADER]
        for be_id, (name, slots) in enumerate(self.backends.items(), start=1):
            if backend is not None and name != backend:
                continue
            for srv_id, s in enumerate(slots, start=1):
                op = 0 if s.admin & FORCED_MAINT else 2
                lines.append(f"{be_id} {name} {srv_id} {s.name} {s.address} {op} {s.admin} "
                             f"{s.weight} {s.port}")
        return "\n".join(lines) + "\n"

    def servers(self, backend: str | None = None) -> list[ServerRow]:
        if backend is not None and backend not in self.backends:
            raise RuntimeCommandError(f"HAProxy refused 'show servers state {backend}': "
                                      "Can't find backend.")
        return parse_servers_state(self.text(backend))

    def servers_state_lines(self) -> Iterator[str]:
        yield from self.text().splitlines()

    def proc(self) -> ProcInfo:
        return ProcInfo(self.master_pid, self.reloads, self.failed,
                        [(self.worker, 0)], list(self.old_workers))

    def worker_command(self, pid: int, command: str) -> str:
        """An old worker: it has no sessions to show (as ``command``'s ``show``)."""
        return ""

    # -- changes

    def command(self, command: str) -> str:
        if command.startswith("show servers state"):
            return self.text(command.split()[3] if len(command.split()) > 3 else None).strip()
        if command.startswith("show "):
            return ""
        self.commands += 1
        words = command.split()
        if words[:3] == ["shutdown", "sessions", "server"] and len(words) == 4:
            self._slot(command, words[3])
            self.shutdowns.append(words[3])
            return ""
        if words[:2] != ["set", "server"] or len(words) < 5:
            raise RuntimeCommandError(f"HAProxy refused {command!r}: Unknown command")
        slot = self._slot(command, words[2])
        what, value = words[3], words[4]
        if what == "addr":
            slot.address = value
            if len(words) >= 7 and words[5] == "port":
                slot.port = int(words[6])
        elif what == "weight":
            weight = int(value)
            if not 0 <= weight <= MAX_WEIGHT:
                return "Absolute weight can only be between 0 and 256 inclusive."
            slot.weight = weight
        elif what == "state" and value in ("ready", "drain", "maint"):
            if value == "ready":
                slot.admin &= ~(FORCED_MAINT | DRAIN)
            elif value == "drain":
                slot.admin = (slot.admin & ~FORCED_MAINT) | DRAIN
            else:
                slot.admin = (slot.admin & ~DRAIN) | FORCED_MAINT
        elif what == "state":
            return "'set server <srv> state' expects 'ready', 'drain' and 'maint'."
        else:
            raise RuntimeCommandError(f"HAProxy refused {command!r}: unknown keyword")
        return ""

    def _slot(self, command: str, target: str) -> _Slot:
        backend, _, name = target.partition("/")
        if backend not in self.backends:
            raise RuntimeCommandError(f"HAProxy refused {command!r}: No such backend.")
        found = next((s for s in self.backends[backend] if s.name == name), None)
        if found is None:
            raise RuntimeCommandError(f"HAProxy refused {command!r}: No such server.")
        return found

    def set_server(self, backend: str, slot: str, address: str | None = None,
                   port: int | None = None, weight: int | None = None,
                   state: str | None = None) -> None:
        target = f"{backend}/{slot}"
        if address is not None:
            self.command(f"set server {target} addr {address} port {port}")
        if weight is not None:
            self.command(f"set server {target} weight {weight}")
        if state is not None:
            self.command(f"set server {target} state {state}")

    def reload(self, timeout: float = 60.0, poll: float = 0.05) -> ProcInfo:
        """A new worker on the configuration file (runtime changes are not kept)."""
        self.reloads += 1
        self.old_workers.append(self.worker)
        self.worker += 1
        if self.config_path is not None:
            with open(self.config_path) as handle:
                self.backends = parse_config(handle.read())
        return self.proc()
