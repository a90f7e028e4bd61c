"""The drift-check contract every target keeps (:meth:`dcnet.target.Target.drifted`):
given the model in pieces, it answers exactly what its plan says, ``not plan.empty``.

:func:`assert_drift_agrees` checks that on a live target for the applied model and for
variants of it (:func:`variants`: a service gone at each end, a real server's weight
changed, a real server gone, a service's servers all gone), each given in pieces of
``per_piece`` services (small, so a model spans several pieces). Each target's own
tests call it on the real thing (nft, HAProxy, LVS in the kernel lab) and the fakes.
"""

from __future__ import annotations

import dataclasses

from dcnet.model import pieces as model_pieces
from dcnet.target import session


def variants(model) -> list[tuple[str, object]]:
    """(name, model): the model, and models that differ from it by one thing each."""
    services = model.services
    out = [("as applied", model)]
    if not services:
        return out
    out.append(("first service gone", dataclasses.replace(model, services=services[1:])))
    out.append(("last service gone", dataclasses.replace(model, services=services[:-1])))
    last = len(services) - 1
    with_servers = [i for i, s in enumerate(services) if s.real_servers]
    if with_servers:
        i = with_servers[-1]
        s = services[i]
        first = s.real_servers[0]
        heavier = (dataclasses.replace(first, weight=first.weight + 1), *s.real_servers[1:])
        out.append(("a weight changed", _with(model, i, dataclasses.replace(
            s, real_servers=heavier))))
        out.append(("a real server gone", _with(model, i, dataclasses.replace(
            s, real_servers=s.real_servers[1:]))))
    out.append(("a service's servers gone", _with(model, last, dataclasses.replace(
        services[last], real_servers=()))))
    return out


def _with(model, index: int, service):
    services = list(model.services)
    services[index] = service
    return dataclasses.replace(model, services=tuple(services))


def assert_drift_agrees(target: str, options: dict, model, per_piece: int = 2,
                        expect_drift_in: set[str] | None = None) -> dict[str, bool]:
    """For each of :func:`variants` of ``model`` (which the target holds now): the
    target's drift check of it in pieces equals ``not plan.empty`` of its whole plan;
    returns name -> drift. ``expect_drift_in``: the variants that must drift (all but
    "as applied" by default), so the check cannot pass by answering alike wrongly."""
    seen = {}
    for name, variant in variants(model):
        planned = session.run(target, variant, options, apply=False)
        pieces = model_pieces.Pieces(model_pieces.pack(variant, per_piece))
        drift = session.drifted(target, pieces, options)
        assert drift == (not planned.plan.empty), (
            f"{target}: {name}: drifted() says {drift}, the plan holds "
            f"{len(planned.plan.changes)} change(s)")
        seen[name] = drift
    wanted = expect_drift_in if expect_drift_in is not None else set(seen) - {"as applied"}
    assert {n for n, d in seen.items() if d} == wanted, seen
    return seen
