"""One apply of a model to a director's target, exactly as ``elbctl apply`` does it.

Every target goes through :func:`dcnet.target.session.run`: a fresh target instance,
its lock held from read to last write, the shared :func:`dcnet.target.apply_plan`. The
agent applies with ``force``: the change guard protects an operator's hand-run apply;
in etcd the deliberate step is ``elbctl push`` (reviewed with ``elbctl plan``), and an
agent that refused a pushed model would leave its director behind for good.
"""

from __future__ import annotations

import os

from dcnet.target import registry, session


def available() -> list[str]:
    return registry.available()


def apply_model(target: str, options: dict, model) -> session.Outcome:
    """Plan and apply ``model``; raises when the target cannot be reached at all."""
    timeout = float(os.environ.get("DCNET_LOCK_TIMEOUT", session.DEFAULT_LOCK_TIMEOUT))
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    return session.run(target, model, given, apply=True, force=True, lock_timeout=timeout)


def create_target(target: str, options: dict):
    """A target instance with the agent's options (the drain follower's own)."""
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    return registry.create(target, **given)
