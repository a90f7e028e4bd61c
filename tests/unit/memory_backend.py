"""An in-memory target for unit tests of the target contract: services and dests as data.

The objects live in a :class:`MemoryWorld` (the stand-in for a kernel), so several
target instances see and change the same state, as real targets do. The desired state
is derived from the model the way a real IPVS target would (one service per VIP and
port, one dest per real server) so the contract is exercised on realistic shapes.
``fail_on`` makes chosen kinds fail, to test stop-and-undo; dests are applied in
batches (``batch_kinds``) to exercise the batching hook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from dcnet.plan import Action, Change, Plan, State, state_digest
from dcnet.target import Option, Snapshot, Target


@dataclass
class MemoryWorld:
    lock_path: str | None = None
    state: dict = field(default_factory=dict)
    fail_on: tuple[str, ...] = ()
    writes: int = 0
    batches: list[int] = field(default_factory=list)


class MemoryTarget(Target):
    name = "memory"
    kind_order = ("address", "service", "dest")
    batch_kinds = frozenset({"dest"})
    batch_size = 3
    options = (Option("label", "memory-label", "A label (tests option plumbing)."),)
    world: ClassVar[MemoryWorld | None] = None

    def __init__(self, label: str | None = None, world: MemoryWorld | None = None):
        self.label = label
        self.w = world or type(self).world or MemoryWorld()

    @classmethod
    def bound(cls, world: MemoryWorld) -> type[MemoryTarget]:
        """A subclass whose instances (made by the registry) all use ``world``."""
        return type("BoundMemoryTarget", (cls,), {"world": world})

    def lock_path(self) -> str | None:
        return self.w.lock_path

    def read(self, model) -> Snapshot:
        return Snapshot(dict(self.w.state), digest=state_digest(self.w.state))

    def current_digest(self, plan: Plan) -> str | None:
        return state_digest(self.w.state)

    def desired(self, model, current: Snapshot) -> State:
        out: dict = {}
        for service in model.services:
            for carrier, vip in service.vips:
                out[("address", (str(vip),))] = {"carrier": carrier}
                for port in service.ports:
                    out[("service", (port.protocol.value, str(vip), port.port))] = {
                        "scheduler": port.scheduler, "persistence": port.persistence}
            for ep in service.endpoints():
                skey = (ep.port.protocol.value, str(ep.vip), ep.port.port)
                out[("dest", (*skey, str(ep.server.address), ep.server_port))] = {
                    "weight": ep.server.weight, "forward": ep.port.forward.value}
        return out

    def apply_batch(self, changes: list[Change], plan: Plan) -> list[BaseException | None]:
        self.w.batches.append(len(changes))
        return super().apply_batch(changes, plan)

    def apply_change(self, change: Change, plan: Plan) -> None:
        if change.kind in self.w.fail_on and change.action is not Action.DELETE:
            raise OSError(f"injected failure on {change.kind}")
        self.w.writes += 1
        ident = (change.kind, change.key)
        if change.action is Action.DELETE:
            del self.w.state[ident]
        else:
            self.w.state[ident] = dict(change.new)

    def counters(self) -> dict[str, int]:
        return {"memory": self.w.writes}
