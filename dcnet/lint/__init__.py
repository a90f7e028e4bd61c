"""Best-practice rules for a service model (``elbctl lint``): pure checks of a loaded model.

Each rule has an id (``ELB001``...), a severity (``error`` or ``warning``), a reason and
a check over one service. A service silences rules with ``lint: {ignore: [ELB001]}`` in
the model. :func:`lint` takes a validated :class:`~dcnet.model.Model` and a ``line_of``
callable (field path -> line, from :func:`dcnet.model.yamlsource.load_located`) and does
no I/O; :func:`lint_file` loads the model and its lines and calls it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dcnet.model import Model
from dcnet.model.fields import format_path
from dcnet.model.loader import load_model, read_model_text
from dcnet.model.types import CheckType, Service
from dcnet.model.yamlsource import load_located

ERROR, WARNING = "error", "warning"
MAX_PERSISTENCE = 3600          # seconds; longer pins clients as if there were no timeout
PLACEHOLDERS = frozenset({"test", "tmp", "temp", "todo", "xxx", "foo", "bar", "default",
                          "changeme", "unknown", "none"})
LineOf = Callable[[tuple], "int | None"]


@dataclass(frozen=True)
class Finding:
    """One rule firing on one service, at one field."""

    source: str
    line: int | None
    rule: str
    severity: str
    service: str
    field: str
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.rule} {self.severity}: {self.message} [{self.field}]"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    reason: str
    check: Callable[[Model, Service], list[tuple[tuple, str]]]   # -> (field path, message)


def _single_server(model: Model, s: Service):
    if len(s.real_servers) == 1:
        return [(("real_servers",), f"only one real server ({s.real_servers[0].address}): "
                 "no redundancy when it fails")]
    return []


def _no_health_check(model: Model, s: Service):
    if s.health_check.type is CheckType.NONE:
        return [(("health_check", "type"), "health check type none: a dead real server keeps "
                 "getting traffic")]
    return []


def _one_carrier(model: Model, s: Service):
    up = [c.name for c in model.carriers if not c.down]
    lines = {carrier for carrier, _ in s.vips}       # a dual-stack line has two VIPs
    if len(up) > 1 and len(lines) == 1:
        return [(("vips",), f"VIPs on carrier {s.vips[0][0]!r} only, of {len(up)} carriers "
                 "up: its clients on other lines cross carriers, and the service is down "
                 "with that one line")]
    return []


def _long_persistence(model: Model, s: Service):
    return [(("ports", i, "persistence"),
             f"persistence {p.persistence}s on port {p.port} is longer than "
             f"{MAX_PERSISTENCE}s: clients stay pinned to a server as if it had no timeout")
            for i, p in enumerate(s.ports) if p.persistence > MAX_PERSISTENCE]


def _weights_zero(model: Model, s: Service):
    if s.real_servers and all(r.weight == 0 for r in s.real_servers):
        return [(("real_servers",), f"all {len(s.real_servers)} real servers have weight 0: "
                 "the service takes no new connections")]
    return []


def _jobname(model: Model, s: Service):
    out = []
    for tag, value in s.job.tags().items():
        if value in PLACEHOLDERS:
            out.append(f"tag {tag!r} has the placeholder value {value!r}")
        elif "--" in value:
            out.append(f"tag {tag!r} value {value!r} has '--'")
        elif value == tag or value.startswith(f"{tag}-"):
            out.append(f"tag {tag!r} value {value!r} repeats the tag's name")
    return [(("job",), "JOBNAME breaks the naming pattern: " + "; ".join(out))] if out else []


RULES: tuple[Rule, ...] = (
    Rule("ELB001", WARNING, "a single real server is a single point of failure",
         _single_server),
    Rule("ELB002", ERROR, "without a health check a failed real server is never taken out",
         _no_health_check),
    Rule("ELB003", WARNING, "an external service on one carrier only loses every other "
         "line's direct path", _one_carrier),
    Rule("ELB004", WARNING, f"persistence longer than {MAX_PERSISTENCE}s acts as no timeout",
         _long_persistence),
    Rule("ELB005", ERROR, "real servers all at weight 0 serve nothing", _weights_zero),
    Rule("ELB006", WARNING, "JOBNAME tag values follow the service tree's naming pattern "
         "(no placeholders, no '--', no tag name repeated)", _jobname),
)
RULE_IDS = frozenset(r.id for r in RULES)


def lint(model: Model, line_of: LineOf | None = None,
         rules: tuple[Rule, ...] = RULES) -> list[Finding]:
    """Every finding of ``rules`` over ``model``, in model order; silenced ones left out.
    An ignore entry naming no rule is itself a finding (``ELB000``, warning)."""
    line_of = line_of or (lambda path: None)
    findings = []
    for i, service in enumerate(model.services):
        base = ("services", i)
        for rule in rules:
            if rule.id in service.lint_ignore:
                continue
            for path, message in rule.check(model, service):
                findings.append(Finding(model.source, line_of((*base, *path)), rule.id,
                                        rule.severity, service.name,
                                        format_path((*base, *path)), message))
        for j, rule_id in enumerate(service.lint_ignore):
            if rule_id not in RULE_IDS:
                path = (*base, "lint", "ignore", j)
                findings.append(Finding(model.source, line_of(path), "ELB000", WARNING,
                                        service.name, format_path(path),
                                        f"lint ignore names no rule: {rule_id}"))
    return findings


def lint_file(path: str) -> list[Finding]:
    """Load the model at ``path`` (ModelError when invalid) and lint it with its lines."""
    model = load_model(path)
    located = load_located(read_model_text(path), path)
    return lint(model, located.line_of)


def has_errors(findings: list[Finding]) -> bool:
    return any(f.severity == ERROR for f in findings)
