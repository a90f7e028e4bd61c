"""``haproxy -c`` on rendered files, and finding the bad services in few checks.

:func:`run_check` validates one text. :func:`render_valid` renders the model, checks the
whole file once, and when it fails finds which services broke it *without one check per
service*: HAProxy names the file line (``[file:123]``) or the proxy (``Proxy 'x'``,
``backend 'x'``) of each error, and the renderer knows which service owns each line and
proxy; those services are set aside and the rest is checked again (parse errors come
before post-parse errors, so this takes a few rounds). Errors that name neither are
found by bisection over the remaining services (O(k log n) checks for k bad services).
Set-aside services are reported by name, and the others still render.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from dcnet.haproxy.paths import Paths
from dcnet.haproxy.render import Rendered, Renderer, render
from dcnet.model import Model

_LINE = re.compile(r"\[[^\]\[]*?:(\d+)\]")
_PROXY = re.compile(r"(?:Proxy|proxy|backend|frontend|listen|server) '([^'/]+)(?:/[^']*)?'")
HAPROXY = os.environ.get("DCNET_HAPROXY_BIN", "haproxy")


class ConfigInvalid(ValueError):
    """A rendered file failed ``haproxy -c``; ``errors`` are HAProxy's ALERT lines."""

    def __init__(self, errors: list[str], what: str = "rendered configuration"):
        self.errors = errors
        super().__init__(f"{what} failed haproxy -c:\n  " + "\n  ".join(errors or ["?"]))


@dataclass
class CheckResult:
    ok: bool
    alerts: list[str]


def run_check(text: str, haproxy: str = HAPROXY, directory: str | None = None) -> CheckResult:
    """``haproxy -c`` on ``text`` (written to a temporary file)."""
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", dir=directory, delete=False) as tmp:
        tmp.write(text)
    try:
        done = subprocess.run([haproxy, "-c", "-f", tmp.name], capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise ConfigInvalid([f"cannot run {haproxy}: {exc}"]) from exc
    finally:
        os.unlink(tmp.name)
    output = (done.stdout + done.stderr).splitlines()
    alerts = [line.split(" : ", 1)[-1] if "]" in line else line
              for line in output if "[ALERT]" in line]
    alerts = [a for a in alerts if not a.startswith(("Fatal errors found",
                                                     "Error(s) found in configuration"))]
    return CheckResult(done.returncode == 0, alerts)


def blame(alerts: list[str], rendered: Rendered) -> tuple[dict[str, list[str]], list[str]]:
    """Pure: map alert lines to services by file line or proxy name; the rest unplaced."""
    found: dict[str, list[str]] = {}
    unplaced = []
    for alert in alerts:
        owner = None
        for match in _LINE.finditer(alert):
            owner = rendered.section_at(int(match.group(1)))
            if owner is not None:
                break
        if owner is None or owner == "global":
            for match in _PROXY.finditer(alert):
                owner = rendered.proxies.get(match.group(1), owner)
                if owner not in (None, "global"):
                    break
        if owner is None or owner == "global":
            unplaced.append(alert)
        else:
            found.setdefault(owner, []).append(alert)
    return found, unplaced


@dataclass
class ValidRender:
    """A rendered file that passed ``haproxy -c`` (``rendered.text``), the services set
    aside with their errors, and how many checks it took."""

    rendered: Rendered
    bad: dict[str, list[str]] = field(default_factory=dict)
    checks: int = 0
    warning: str | None = None      # e.g. maxconn lowered to fit the descriptor limit


Checker = Callable[[str], CheckResult]


def render_valid(model: Model, paths: Paths, layouts: Mapping | None = None, *,
                 fallback: Mapping[str, str] | None = None, checker: Checker | None = None,
                 renderer: Renderer | None = None) -> ValidRender:
    """Render, validate, and set aside bad services until the file passes.

    A bad service is replaced by its ``fallback`` block (the one running now) when there
    is one, else left out; either way it is listed in ``bad``. Raises
    :class:`ConfigInvalid` when the global part itself is bad.
    """
    checker = checker or run_check
    renderer = renderer or Renderer(model, paths)
    fallback = fallback or {}
    result = ValidRender(Rendered(""))
    excluded: set[str] = set()
    kept: set[str] = set()
    names = [s.name for s in model.services]

    def attempt(subset: list[str]) -> tuple[Rendered, CheckResult]:
        rendered = render(model, paths, layouts, only=subset,
                          keep={n: fallback[n] for n in kept if n in subset},
                          renderer=renderer)
        for name, error in rendered.failed.items():
            set_aside(name, [error])
        result.checks += 1
        return rendered, checker(rendered.text)

    def set_aside(name: str, alerts: list[str]) -> None:
        result.bad.setdefault(name, []).extend(alerts)
        if name in fallback and name not in kept:
            kept.add(name)
        else:
            excluded.add(name)

    while True:
        subset = [n for n in names if n not in excluded]
        rendered, outcome = attempt(subset)
        if rendered.failed:
            continue      # template errors: set aside already; render again without them
        if outcome.ok:
            result.rendered = rendered
            result.warning = renderer.warning
            return result
        found, unplaced = blame(outcome.alerts, rendered)
        for name, alerts in found.items():
            set_aside(name, alerts)
        if found:
            continue
        culprit = _bisect([n for n in subset if n not in excluded], attempt)
        if culprit is None:
            raise ConfigInvalid(unplaced or outcome.alerts,
                                "the global part of the configuration")
        set_aside(culprit, unplaced or outcome.alerts)


def _bisect(names: list[str], attempt) -> str | None:
    """One bad service among ``names`` by halving (None if the global part is bad).

    When the failure needs two services together (say, a name both use), halving may
    land on either of them; that one is set aside and the loop goes on."""
    if not names:
        return None
    _, outcome = attempt([])
    if not outcome.ok:
        return None
    low = names
    while len(low) > 1:
        half = low[:len(low) // 2]
        _, outcome = attempt(half)
        low = half if not outcome.ok else low[len(low) // 2:]
    return low[0]
