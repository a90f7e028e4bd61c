"""Pure mapping of the model onto HAProxy objects: listeners, servers and server slots.

Every TCP port of a service becomes one *listener*: a frontend binding the port on the
listen addresses (the service's VIPs unless ``haproxy.listen`` is set) and a backend of
the same name, ``<JOBNAME>:<port>``. UDP and SCTP ports are skipped (HAProxy 2.6 does
not balance them). Real servers live in numbered *slots* ``s1..sN``: a slot is filled
(address, port, weight or drain) or free (maintenance, ``0.0.0.0``). Slots let the
runtime API add a server without a reload, and keeping servers in the slot they occupy
keeps the server-state file meaningful across reloads.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcnet.haproxy.balance import Balance, balance_for
from dcnet.model import Model, Port, Protocol, Service

HAPROXY_MAX_WEIGHT = 256
SLOT_PREFIX = "s"
READY, DRAIN = "ready", "drain"


@dataclass(frozen=True)
class ServerSpec:
    """One real server as HAProxy should run it: state ``ready`` (with weight) or ``drain``."""

    address: str
    port: int
    weight: int
    state: str

    @property
    def key(self) -> str:
        return server_key(self.address, self.port)

    def attrs(self) -> dict:
        return {"state": self.state} if self.state == DRAIN else {"state": READY,
                                                                    "weight": self.weight}


@dataclass(frozen=True)
class Listener:
    """One service port: frontend and backend named ``name``."""

    service: Service
    port: Port
    name: str
    binds: tuple[str, ...]
    balance: Balance
    servers: tuple[ServerSpec, ...]


def server_key(address: str, port: int) -> str:
    """``10.0.0.1:8080`` or ``[2001:db8::1]:8080``."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def bind_address(address: str, port: int) -> str:
    """A ``bind`` argument: ``10.0.0.1:80`` or ``ipv6@2001:db8::1:80``."""
    return f"ipv6@{address}:{port}" if ":" in address else f"{address}:{port}"


def listener_name(service: Service, port: Port) -> str:
    return f"{service.name}:{port.port}"


def haproxy_weights(weights: list[int]) -> list[int]:
    """Model weights (0..65535) as HAProxy weights (0..256), scaled only when needed."""
    top = max(weights, default=0)
    if top <= HAPROXY_MAX_WEIGHT:
        return list(weights)
    return [0 if w == 0 else max(1, round(w * HAPROXY_MAX_WEIGHT / top)) for w in weights]


def servers_of(service: Service, port: Port) -> tuple[ServerSpec, ...]:
    weights = haproxy_weights([s.weight for s in service.real_servers])
    return tuple(
        ServerSpec(str(s.address), service.server_port(s, port), w, DRAIN if w == 0 else READY)
        for s, w in zip(service.real_servers, weights, strict=True))


def listeners(model: Model) -> list[Listener]:
    """Every TCP service port of the model, in model order."""
    out = []
    for service in model.services:
        addresses = ([str(a) for a in model.haproxy.listen] or
                     [str(vip) for _, vip in service.vips])
        for port in service.ports:
            if port.protocol is not Protocol.TCP:
                continue
            out.append(Listener(
                service, port, listener_name(service, port),
                tuple(bind_address(a, port.port) for a in addresses),
                balance_for(port.scheduler), servers_of(service, port)))
    return out


def skipped_ports(model: Model) -> list[str]:
    """``<service> udp/53`` for each port HAProxy cannot serve."""
    return [f"{s.name} {p.protocol.value}/{p.port}" for s in model.services for p in s.ports
            if p.protocol is not Protocol.TCP]


def slot_name(index: int) -> str:
    """Slot 0 is ``s1``."""
    return f"{SLOT_PREFIX}{index + 1}"


def slot_index(name: str) -> int | None:
    if name.startswith(SLOT_PREFIX) and name[len(SLOT_PREFIX):].isdigit():
        return int(name[len(SLOT_PREFIX):]) - 1
    return None


Slots = tuple[str | None, ...]   # server key per slot, None = free


def assign_slots(current: Slots | None, wanted: list[str], spare: int) -> Slots:
    """Keep servers in their slots and place new ones, growing only when needed.

    A new backend gets ``len(wanted) + spare`` slots. In an existing one, new servers go
    first to slots that are free now, then to slots of servers being removed (the
    runtime API then changes that slot's address), and only when both run out does the
    backend grow, by the missing count plus ``spare``.
    """
    if current is None:
        return (*wanted, *([None] * spare))
    keep = set(wanted)
    slots = list(current)
    new = [key for key in wanted if key not in set(current)]
    free_now = [i for i, key in enumerate(current) if key is None]
    freed = [i for i, key in enumerate(current) if key is not None and key not in keep]
    for index in freed:
        slots[index] = None
    targets = free_now + freed
    if len(new) > len(targets):
        start = len(slots)
        slots.extend([None] * (len(new) - len(targets) + spare))
        targets += list(range(start, len(slots)))
    for index, key in zip(targets, new, strict=False):
        slots[index] = key
    return tuple(slots)
