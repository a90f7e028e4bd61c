"""Answer diffing (Diffy's idea): candidate vs current, with a second current as noise.

It owns the comparison: every HTTP request of every session is sent (keep-alive, in
recorded order, :func:`dcnet.mirror.replay.replay_session`) to the candidate, the
primary (current version) and the secondary (a second instance of the current version).
Each answer is split into fields (``status``, ``header:<name>``, ``body``). A field that
differs between primary and secondary for any request of an endpoint is noise for that
endpoint; a field where the candidate differs from the primary and that is not noise is
a difference, reported per endpoint (method and path with digit runs as ``N``) with up
to ``examples`` examples. Headers in ``ignore_headers`` (``date`` by default) are never
compared. Sessions that are not HTTP/1.1 are skipped and counted.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dcnet.mirror import recording
from dcnet.mirror.replay import replay_session, split_http

DEFAULT_IGNORED = ("date",)


def endpoint_of(request: bytes) -> str:
    method, _, rest = request.partition(b" ")
    path = rest.split(b" ", 1)[0].split(b"?", 1)[0].decode("latin-1")
    return f"{method.decode('latin-1')} {re.sub(r'[0-9]+', 'N', path)}"


def fields_of(answer: bytes, ignore_headers: Iterable[str] = DEFAULT_IGNORED) -> dict:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    ignored = {h.lower() for h in ignore_headers}
    out = {"status": lines[0].split(" ", 2)[1] if " " in lines[0] else lines[0],
           "body": body}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() not in ignored:
            out[f"header:{name.strip().lower()}"] = value.strip()
    return out


def differing(a: dict, b: dict) -> set[str]:
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


@dataclass
class EndpointReport:
    requests: int = 0
    differences: int = 0
    noise_fields: set[str] = field(default_factory=set)
    fields: set[str] = field(default_factory=set)
    examples: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"requests": self.requests, "differences": self.differences,
                "fields": sorted(self.fields), "noise_fields": sorted(self.noise_fields),
                "examples": self.examples}


def compare(rows: Sequence[tuple[bytes, bytes, bytes, bytes]],
            ignore_headers: Iterable[str] = DEFAULT_IGNORED, examples: int = 3
            ) -> dict[str, EndpointReport]:
    """rows: (request, candidate answer, primary answer, secondary answer); pure."""
    parsed = []
    reports: dict[str, EndpointReport] = {}
    for request, cand, prim, sec in rows:
        ep = endpoint_of(request)
        report = reports.setdefault(ep, EndpointReport())
        c, p, s = (fields_of(x, ignore_headers) for x in (cand, prim, sec))
        report.noise_fields |= differing(p, s)
        parsed.append((ep, request, c, p))
    for ep, request, c, p in parsed:
        report = reports[ep]
        report.requests += 1
        real = differing(c, p) - report.noise_fields
        if real:
            report.differences += 1
            report.fields |= real
            if len(report.examples) < examples:
                report.examples.append({
                    "request": request.split(b"\r\n", 1)[0].decode("latin-1"),
                    "fields": {k: {"candidate": _show(c.get(k)), "primary": _show(p.get(k))}
                               for k in sorted(real)}})
    return reports


def _show(value) -> str | None:
    if isinstance(value, bytes):
        return value[:200].decode("utf-8", "replace")
    return value


def run_diff(sessions: Sequence[recording.Session], candidate: tuple[str, int],
             primary: tuple[str, int], secondary: tuple[str, int],
             ignore_headers: Iterable[str] = DEFAULT_IGNORED) -> dict:
    """Send every HTTP session to the three targets and compare; returns the report."""
    rows = []
    skipped = errors = 0
    for session in sessions:
        requests = split_http(session.payload)
        if requests is None:
            skipped += 1
            continue
        results = [replay_session(session, t, False, 1.0) for t in (candidate, primary,
                                                                     secondary)]
        if any(r["error"] or len(r["answers"]) != len(requests) for r in results):
            errors += 1
            continue
        answers = [[base64.b64decode(a) for a in r["answers"]] for r in results]
        rows += [(req, *(a[i] for a in answers)) for i, req in enumerate(requests)]
    reports = compare(rows, ignore_headers)
    total = sum(r.requests for r in reports.values())
    different = sum(r.differences for r in reports.values())
    return {"requests": total, "differences": different, "skipped_sessions": skipped,
            "failed_sessions": errors,
            "endpoints": {ep: r.to_dict() for ep, r in sorted(reports.items())}}
