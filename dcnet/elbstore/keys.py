"""Where the ELB keeps its state in etcd (pure).

Everything lives under ``<store prefix>/elb/`` (the store URL's prefix, ``/dcnet`` by
default)::

    elb/desired/current                      {"revision": N}   the model revision in force
    elb/desired/models/<N, 10 digits>        model revision N (see dcnet.elbstore.records)
    elb/desired/backends/<JOBNAME>/<ADDR[:PORT]>   {"weight": W, "state": S, ...}
    elb/status/<DIRECTOR>/state              what that director applied, when, with what result
    elb/status/<DIRECTOR>/drain/<JOBNAME>/<ADDR[:PORT]>   that director's drain of a
                                             draining backend record (dcnet.elbstore.drains)

Agents watch ``elb/desired/`` only, so directors writing their status never wake each
other. Backends sit under their service's JOBNAME and a director's status under its own
name, so etcd roles can grant exactly one service's or one director's prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dcnet.model.jobname import JobName

REVISION_DIGITS = 10
_DIRECTOR = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class KeyNameError(ValueError):
    """A name that cannot be part of a key (bad JOBNAME, director or revision)."""


def check_director(name: str) -> str:
    if not _DIRECTOR.match(name or ""):
        raise KeyNameError(f"director name {name!r} must be 1-63 lower-case letters, digits, "
                        "'.', '_' or '-', starting with a letter or digit")
    return name


def check_job(name: str) -> str:
    """The canonical JOBNAME (a JOBNAME is the only service key)."""
    try:
        return str(JobName.parse(name))
    except ValueError as exc:
        raise KeyNameError(f"service {name!r}: {exc}") from None


@dataclass(frozen=True)
class Keys:
    """The key layout under one store prefix."""

    prefix: str = ""

    @property
    def root(self) -> str:
        return self.prefix.rstrip("/") + "/elb/"

    @property
    def desired(self) -> str:
        return self.root + "desired/"

    @property
    def current(self) -> str:
        return self.desired + "current"

    @property
    def models(self) -> str:
        return self.desired + "models/"

    def model(self, revision: int) -> str:
        if revision < 1 or revision >= 10 ** REVISION_DIGITS:
            raise KeyNameError(f"model revision {revision} out of range")
        return f"{self.models}{revision:0{REVISION_DIGITS}d}"

    @property
    def backends(self) -> str:
        return self.desired + "backends/"

    def service_backends(self, job: str) -> str:
        return f"{self.backends}{check_job(job)}/"

    def backend(self, job: str, ident: str) -> str:
        return self.service_backends(job) + ident

    @property
    def statuses(self) -> str:
        return self.root + "status/"

    def director_status_prefix(self, director: str) -> str:
        return f"{self.statuses}{check_director(director)}/"

    def status(self, director: str) -> str:
        return self.director_status_prefix(director) + "state"

    def drain_report(self, director: str, job: str, ident: str) -> str:
        return f"{self.director_status_prefix(director)}drain/{check_job(job)}/{ident}"

    # ------------------------------------------------------------------ parsing

    def parse(self, key: str) -> tuple:
        """What a key under the root is: ``("current",)``, ``("model", N)``,
        ``("backend", JOBNAME, IDENT)``, ``("status", DIRECTOR)``, ``("drain", DIRECTOR,
        JOBNAME, IDENT)`` or ``("other", key)``."""
        if key == self.current:
            return ("current",)
        if key.startswith(self.models):
            tail = key[len(self.models):]
            if tail.isdigit():
                return ("model", int(tail))
        elif key.startswith(self.backends):
            job, slash, ident = key[len(self.backends):].partition("/")
            if slash and job and ident:
                return ("backend", job, ident)
        elif key.startswith(self.statuses):
            director, slash, leaf = key[len(self.statuses):].partition("/")
            if slash and leaf == "state":
                return ("status", director)
            kind, _, rest = leaf.partition("/")
            job, slash2, ident = rest.partition("/")
            if slash and kind == "drain" and job and slash2 and ident:
                return ("drain", director, job, ident)
        return ("other", key)
