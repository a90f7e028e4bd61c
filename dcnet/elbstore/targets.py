"""One apply of a model to a director's target with that target's existing plan/apply.

- ``lvs``: as ``elbctl apply --target lvs``: the state directory's lock held from read to
  last write, IPVS writes batched, drains kept (``--lvs-netns``, ``--lvs-state-dir``);
- ``haproxy``: as ``elbctl apply --target haproxy`` (``--haproxy-run-dir``,
  ``--haproxy-config``, else ``DCNET_HAPROXY_*``);
- ``dns``: as ``elbctl apply --target dns`` (``--dns-dir``, ``--force``, else
  ``DCNET_DNS_*``).

A fresh back end per apply, exactly as one ``elbctl apply`` run makes it. Any other
target registered in :mod:`dcnet.backends` is applied with :func:`dcnet.plan.apply_plan`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from dcnet import backends
from dcnet.plan import ApplyResult, Plan, apply_plan

TARGETS = ("lvs", "haproxy", "dns")


@dataclass
class Outcome:
    plan: Plan
    result: ApplyResult
    notes: list[str] = field(default_factory=list)


def backend_options(target: str, options: dict) -> dict:
    """The factory keywords of ``target`` among the agent's options (None = unset)."""
    names = {"lvs": {"lvs_netns": "netns", "lvs_state_dir": "state_dir"},
             "haproxy": {"haproxy_run_dir": "run_dir", "haproxy_config": "config"},
             "dns": {"dns_dir": "directory", "force": "force"}}.get(target, {})
    return {names[k]: v for k, v in options.items() if k in names and v is not None}


def apply_model(target: str, options: dict, model, log=None) -> Outcome:
    """Plan and apply ``model``; raises when the target cannot be reached at all."""
    kwargs = backend_options(target, options)
    if target == "haproxy" and log is not None:
        kwargs["log"] = log
    backend = backends.create(target, **kwargs)
    try:
        if target == "lvs":
            timeout = float(os.environ.get("DCNET_LVS_LOCK_TIMEOUT", "600"))
            with backend.store.locked(timeout):
                plan = backend.plan(model)
                result = backend.apply(plan, rollback=True)
        else:
            plan = backend.plan(model)
            result = apply_plan(backend, plan)
        return Outcome(plan, result, list(plan.notes))
    finally:
        _close(backend)


def _close(backend) -> None:
    for part in (getattr(backend, "ipvs", None), getattr(backend, "routing", None)):
        close = getattr(part, "close", None)
        if close is not None:
            close()
