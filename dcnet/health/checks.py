"""Which health checks a model asks for, and each check's rise/fall state (pure).

A check is what keepalived runs per VIP:port and real server (``connect_port`` is the
check's ``port`` or the real server's port for that VIP port): here it is keyed by what
it probes, so two VIP ports sending to one real server port share one check.
:class:`CheckKey` ``text`` (``tcp 10.0.0.1:8080``, ``http 10.0.0.1:8080/healthz 200``)
is how the state file and the nft target name it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dcnet.model.types import CheckType, HealthCheck


@dataclass(frozen=True, order=True)
class CheckKey:
    kind: str                 # "tcp" or "http"
    address: str
    port: int
    path: str = ""            # http only
    status: int = 0           # http only: the expected status

    @property
    def text(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        if self.kind == "http":
            return f"http {host}:{self.port}{self.path} {self.status}"
        return f"tcp {host}:{self.port}"


def key_of(check: HealthCheck, address: str, server_port: int) -> CheckKey | None:
    """The check of one real server port under ``check`` (None: no check, always up)."""
    if check.type is CheckType.NONE:
        return None
    port = check.port or server_port
    if check.type is CheckType.HTTP:
        return CheckKey("http", address, port, check.path or "/", check.expect_status)
    return CheckKey("tcp", address, port)


@dataclass(frozen=True)
class Timing:
    interval: float
    timeout: float
    rise: int
    fall: int


def checks_of(model) -> dict[CheckKey, Timing]:
    """Every check the model's services ask for (the shortest interval and timeout and
    the smallest rise/fall when services share one)."""
    out: dict[CheckKey, Timing] = {}
    for service in model.services:
        hc = service.health_check
        for server in service.real_servers:
            for port in service.ports:
                key = key_of(hc, str(server.address), server.port or port.backend_port)
                if key is None:
                    continue
                t = Timing(hc.interval, hc.timeout, hc.rise, hc.fall)
                old = out.get(key)
                out[key] = t if old is None else Timing(
                    min(old.interval, t.interval), min(old.timeout, t.timeout),
                    min(old.rise, t.rise), min(old.fall, t.fall))
    return out


@dataclass
class Tracker:
    """One check's state: up until ``fall`` failures in a row, then down until ``rise``
    successes in a row (a new check starts up, as keepalived's and HAProxy's do)."""

    timing: Timing
    up: bool = True
    streak: int = 0           # consecutive results against the current state
    last: str = ""            # the last probe's detail
    probes: int = 0

    def record(self, ok: bool, detail: str = "") -> bool:
        """Count one probe result; True when the state changed."""
        self.last, self.probes = detail, self.probes + 1
        if ok == self.up:
            self.streak = 0
            return False
        self.streak += 1
        if self.streak >= (self.timing.fall if self.up else self.timing.rise):
            self.up, self.streak = ok, 0
            return True
        return False


@dataclass
class Board:
    """The trackers of a model's checks; :meth:`sync` follows a new model (checks kept
    keep their state, new ones start up)."""

    trackers: dict[CheckKey, Tracker] = field(default_factory=dict)

    def sync(self, wanted: dict[CheckKey, Timing]) -> None:
        for key in [k for k in self.trackers if k not in wanted]:
            del self.trackers[key]
        for key, timing in wanted.items():
            if key in self.trackers:
                self.trackers[key].timing = timing
            else:
                self.trackers[key] = Tracker(timing)

    def settled(self) -> bool:
        """Every check has had enough probes to go down (``fall``) or up (``rise``)."""
        return all(t.probes >= max(t.timing.rise, t.timing.fall)
                   for t in self.trackers.values())

    def down(self) -> frozenset[CheckKey]:
        return frozenset(k for k, t in self.trackers.items() if not t.up)
