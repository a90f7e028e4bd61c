"""Service-tree JOBNAMEs: parsing, validation and the canonical text form.

A JOBNAME names a service by the service tree's eight fixed tags, most specific first,
each written ``tag.value`` and joined with ``_``::

    job.ocean-monitor-job_service.ocean-monitor-job_cluster.production-ig_pdl.ocean_owt.inf_cop.xiaomi

The tags, in their fixed order, are ``job``, ``jobgroup``, ``service``, ``servicegroup``,
``cluster``, ``pdl`` (product line), ``owt`` (owner team) and ``cop`` (company).
``jobgroup`` and ``servicegroup`` may be left out; the other six are required. Values are
lower-case letters, digits and ``-``, start and end alphanumeric, at most 63 characters
(so each can stand as a DNS label).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

from dcnet.model.slotted import pickled_by_fields

TAGS: tuple[str, ...] = (
    "job", "jobgroup", "service", "servicegroup", "cluster", "pdl", "owt", "cop",
)
OPTIONAL_TAGS = frozenset({"jobgroup", "servicegroup"})
REQUIRED_TAGS = tuple(t for t in TAGS if t not in OPTIONAL_TAGS)
_VALUE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


@pickled_by_fields
@dataclass(frozen=True, order=True, slots=True)
class JobName:
    """A parsed JOBNAME; ``str()`` gives back the canonical form."""

    job: str
    service: str
    cluster: str
    pdl: str
    owt: str
    cop: str
    jobgroup: str | None = None
    servicegroup: str | None = None
    _text: str | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> JobName:
        """Parse ``text``; ValueError says exactly which tag or value is wrong."""
        if not isinstance(text, str) or not text:
            raise ValueError("JOBNAME must be a non-empty string")
        values: dict[str, str] = {}
        position = -1
        for part in text.split("_"):
            tag, dot, value = part.partition(".")
            if not dot:
                raise ValueError(f"JOBNAME part {part!r} is not 'tag.value'")
            if tag not in TAGS:
                raise ValueError(f"JOBNAME tag {tag!r} is not one of {', '.join(TAGS)}")
            if tag in values:
                raise ValueError(f"JOBNAME tag {tag!r} appears twice")
            if TAGS.index(tag) < position:
                raise ValueError(f"JOBNAME tags must be in the order {'_'.join(TAGS)}; "
                                 f"{tag!r} is out of place")
            position = TAGS.index(tag)
            if not _VALUE.match(value):
                raise ValueError(f"JOBNAME value {value!r} of tag {tag!r} must be lower-case "
                                 "letters, digits and '-', 1-63 characters, alphanumeric at "
                                 "both ends")
            values[tag] = sys.intern(value)   # cluster, pdl, owt, cop: shared by many
        missing = [t for t in REQUIRED_TAGS if t not in values]
        if missing:
            raise ValueError(f"JOBNAME lacks required tag(s): {', '.join(missing)}")
        return cls(**values)

    def tags(self) -> dict[str, str]:
        """The present tags in canonical order."""
        return {t: getattr(self, t) for t in TAGS if getattr(self, t) is not None}

    def __str__(self) -> str:
        text = self._text
        if text is None:  # computed once: services are keyed and named by it everywhere
            text = "_".join(f"{tag}.{value}" for tag, value in self.tags().items())
            object.__setattr__(self, "_text", text)
        return text
