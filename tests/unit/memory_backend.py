"""An in-memory back end for unit tests of the plan core: services and dests as data.

It derives its desired state from the model the way a real IPVS back end would (one
service per VIP and port, one dest per real server) so the plan core is exercised on
realistic shapes. ``fail_on`` makes chosen kinds fail, to test stop-and-undo.
"""

from __future__ import annotations

from dcnet.plan import Action, Backend, Change, State


class MemoryBackend(Backend):
    target = "memory"
    kind_order = ("address", "service", "dest")

    def __init__(self):
        self.state: dict = {}
        self.fail_on: tuple[str, ...] = ()
        self.writes = 0

    def read(self) -> State:
        return dict(self.state)

    def desired(self, model) -> State:
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

    def apply_change(self, change: Change) -> None:
        if change.kind in self.fail_on and change.action is not Action.DELETE:
            raise OSError(f"injected failure on {change.kind}")
        self.writes += 1
        ident = (change.kind, change.key)
        if change.action is Action.DELETE:
            del self.state[ident]
        else:
            self.state[ident] = dict(change.new)
