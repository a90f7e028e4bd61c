"""The model's ``dns`` section: the ELB zone, the name pattern and record TTL.

Every service gets a name under the zone, derived from its JOBNAME by ``pattern``, a
dot-separated template whose ``{tag}`` placeholders name JOBNAME tags. The default,
``{service}.{cluster}.{pdl}.{owt}``, gives e.g.
``ocean-monitor-job.production-ig.ocean.inf.elb.example.com``. Names that are not valid
DNS names, placeholders a service lacks, two services with one name, and a service
named like the zone's own name server record (``dcnet-ns``) are errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dcnet.model import fields as f
from dcnet.model.dns_health import DNSHealth
from dcnet.model.dns_health import read as read_health
from dcnet.model.jobname import TAGS, JobName

DEFAULT_PATTERN = "{service}.{cluster}.{pdl}.{owt}"
# the zone's name server record; equal to dcnet.dns.layout.NS_LABEL (a test checks), kept
# here because the model may not import the DNS back end
NS_LABEL = "dcnet-ns"
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_PLACEHOLDER = re.compile(r"\{([a-z]+)\}")
_ZONE = f.text(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}",
               "a lower-case DNS name such as elb.example.com (no trailing dot)")


@dataclass(frozen=True)
class DNSSettings:
    zone: str = "elb.internal"
    pattern: str = DEFAULT_PATTERN
    ttl: int = 60
    health: DNSHealth = field(default_factory=DNSHealth)   # dns.health (dns_health.py)
    # (service name, carrier name) answers withdrawn by health: never read from the model
    # file; set by ``elbctl dns follow`` (dcnet.dns.follow.overlay) for the DNS layout
    withdrawn: frozenset[tuple[str, str]] = frozenset()

    def relative_name(self, job: JobName) -> str:
        """The service's name relative to the zone; ValueError when it cannot be made."""
        tags = job.tags()

        def fill(match: re.Match) -> str:
            tag = match.group(1)
            if tag not in tags:
                raise ValueError(f"pattern {self.pattern!r} needs tag {tag!r}, which "
                                 f"{job} does not have")
            return tags[tag]

        name = _PLACEHOLDER.sub(fill, self.pattern)
        for label in name.split("."):
            if not _LABEL.match(label):
                raise ValueError(f"pattern {self.pattern!r} gives {name!r}, whose label "
                                 f"{label!r} is not a valid DNS label")
        return name

    def name(self, job: JobName) -> str:
        """The fully qualified name (no trailing dot)."""
        name = f"{self.relative_name(job)}.{self.zone}"
        if len(name) > 253:
            raise ValueError(f"name {name!r} is longer than 253 characters")
        return name


def _pattern(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string such as '{service}.{cluster}'")
    unknown = [t for t in _PLACEHOLDER.findall(value) if t not in TAGS]
    if unknown:
        raise ValueError(f"unknown JOBNAME tag(s) {', '.join(unknown)} in pattern "
                         f"(known: {', '.join(TAGS)})")
    if not _PLACEHOLDER.search(value):
        raise ValueError("pattern must use at least one {tag} placeholder, or every service "
                         "gets the same name")
    return value


def read(problems: f.Problems, path: tuple, data: object) -> DNSSettings | None:
    if data is None:
        return DNSSettings()
    r = f.MappingReader(problems, path, data, "the dns section")
    values = {
        "zone": r.optional("zone", _ZONE, DNSSettings.zone),
        "pattern": r.optional("pattern", _pattern, DEFAULT_PATTERN),
        "ttl": r.optional("ttl", f.integer(0, 2**31 - 1), DNSSettings.ttl),
        "health": read_health(problems, (*path, "health"), r.optional("health", f.raw)),
    }
    return DNSSettings(**values) if r.finish() and values["health"] else None


def check(settings: DNSSettings, carriers, services, problems: f.Problems) -> None:
    """Every service has a valid name and no two services share one."""
    owners: dict[str, int] = {}
    for index, service in services:
        try:
            name = settings.name(service.job)
        except ValueError as exc:
            problems.add(("services", index, "job"), str(exc))
            continue
        if name in owners:
            problems.add(("services", index, "job"), f"DNS name {name} collides with "
                         f"services[{owners[name]}] (dns.pattern {settings.pattern!r})")
        elif name == f"{NS_LABEL}.{settings.zone}":
            problems.add(("services", index, "job"), f"DNS name {name} is the zone's name "
                         f"server record, which dcnet owns; change dns.pattern")
        owners.setdefault(name, index)
