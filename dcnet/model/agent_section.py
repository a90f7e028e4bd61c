"""The model's ``agent`` section: how ``elbctl agent`` (the ELB on etcd) treats drift.

``drift`` is what an agent does when its periodic pass finds the target changed outside
dcnet (the desired state unchanged since its last successful apply, yet the plan not
empty): ``repair`` (the default) applies the model again, ``alert`` leaves the target as
it is and reports the drift until someone acts. Either way the drift is an audit event
(see docs/chaos.md, "elbctl agent").
"""

from __future__ import annotations

from dataclasses import dataclass

from dcnet.model import fields as f

DRIFT_POLICIES = frozenset({"repair", "alert"})


@dataclass(frozen=True)
class AgentSettings:
    drift: str = "repair"       # repair | alert


def read(problems: f.Problems, path: tuple, data: object) -> AgentSettings | None:
    if data is None:
        return AgentSettings()
    r = f.MappingReader(problems, path, data, "the agent section")
    drift = r.optional("drift", f.one_of(DRIFT_POLICIES, "drift policy"),
                       AgentSettings.drift)
    return AgentSettings(drift=drift) if r.finish() else None


def check(settings: AgentSettings, carriers, services, problems: f.Problems) -> None:
    """Nothing depends on the rest of the model."""
