"""The model that labels an exporter's series and each target's drift (:class:`Watch`),
and the work of ``elbctl exporter``'s short-lived loader child (:func:`check_in_child`).

Apart from the CLI (``dcnet.cli.elbctl_metrics`` holds the commands and the
``IsolatedWatch`` that runs the child): a spawned child imports this module to find
:func:`check_in_child`, and with it neither click nor the CLI's option tables (5 MiB of
the first child's peak at 10,000 x 10; docs/metrics.md).
"""

from __future__ import annotations

import hashlib
import pickle
import threading
import zlib
from collections.abc import Callable

from dcnet.model import load_model
from dcnet.model import pieces as model_pieces
from dcnet.target import registry, session


class Watch:
    """The model that labels series and the drift of each target, refreshed in a thread
    every ``interval`` seconds (0: once at start, no drift check)."""

    def __init__(self, targets: dict[str, dict], model=None, interval: float = 60.0,
                 lock_timeout: float = 5.0, source: Callable[[], object] | None = None):
        self.targets, self.given, self.interval = targets, model, interval
        self.source = source          # the model applied now (elbctl agent), when known
        self.lock_timeout = lock_timeout
        self.current = model
        self.drifts: dict[str, bool | None] = {}
        self.stop = threading.Event()
        self.refresh_model()
        if interval > 0:
            threading.Thread(target=self._loop, name="drift", daemon=True).start()

    def last_applied(self, target: str):
        """The last model ``target`` applied, in pieces (:class:`dcnet.model.pieces.
        Pieces`; None: the target keeps none, or its file is unreadable or unsafe)."""
        instance = registry.create(target, **self.targets[target])
        try:
            backends = getattr(instance, "backends", None)
            return backends.last_pieces() if backends is not None else None
        except Exception:          # unreadable or unsafe file: no model from it
            return None
        finally:
            instance.close()

    def refresh_model(self) -> None:
        """The model that labels the series: the source's, the given one, else the last
        model a target applied (in pieces: what :class:`dcnet.metrics.elb.ServiceIndex`
        reads of it is its services)."""
        if self.source is not None:
            self.given = self.current = self.source()
        elif self.given is None:
            for target in self.targets:
                model = self.last_applied(target)
                if model is not None:
                    self.current = model
                    break

    def check(self, refresh: bool = True, pieces=None) -> None:
        """Each target's drift: whether its plan of the model would change anything
        (None: no model to plan; the previous value when the target was busy or
        unavailable). The given model is planned whole; else the model in ``pieces``
        (:class:`dcnet.model.pieces.Pieces`), or the last one each target applied, goes
        to the target's :meth:`~dcnet.target.Target.drifted`, which may check it a piece
        at a time."""
        if refresh:
            self.refresh_model()
        out: dict[str, bool | None] = {}
        for target, options in self.targets.items():
            given = self.given
            parts = None if given is not None else (
                pieces if pieces is not None else self.last_applied(target))
            if given is None and parts is None:
                out[target] = None
                continue
            try:
                if parts is not None:
                    out[target] = session.drifted(target, parts, options,
                                                  lock_timeout=self.lock_timeout)
                else:
                    outcome = session.run(target, given, options, apply=False,
                                          lock_timeout=self.lock_timeout)
                    out[target] = not outcome.plan.empty
            except Exception:      # busy or unavailable: unknown this round
                out[target] = self.drifts.get(target)
        self.drifts = out

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.check()
            self.stop.wait(self.interval)



def check_in_child(targets: dict[str, dict], model_path: str | None, text: bytes | None,
                   lock_timeout: float, previous: dict, known: str | None, drift: bool,
                   vips: bool = True, pickled: tuple[bytes, ...] | None = None):
    """Run in a child by :class:`IsolatedWatch`: the labelling index of the model (the
    given text or ``pickled`` model, else the last model a target applied) as (digest,
    pickled index or None when the digest is ``known``), with ``drift`` whether each
    target's plan of it is not empty (the previous value when the target was busy or
    unavailable), and the model parsed from ``text``, pickled and compressed (else
    None; without ``drift`` each service is pickled as it is read, so the whole model is
    never held: 39 MiB at 10,000 x 10 instead of 52); the index labels IPVS rows only
    with ``vips``, HAProxy's with that target. Given the ``pickled`` model, drift is
    each target's :meth:`~dcnet.target.Target.drifted` of its pieces (a target that
    checks a piece at a time never holds the whole model)."""
    if pickled is not None:            # made by an earlier child of the same process
        pieces = model_pieces.Pieces(pickled)
        drifts = previous
        if drift:                      # each target reads the pieces it needs
            watch = Watch(targets, None, 0, lock_timeout, source=lambda: None)
            watch.drifts = previous
            watch.check(refresh=False, pieces=pieces)
            drifts, watch = watch.drifts, None
        if known is not None:          # the model, so the index, of before
            return known, None, drifts, None             # (10 MiB less at 10,000 x 10)
        return (*_index(pieces, vips, targets, known), drifts, None)
    model, parsed = None, None
    if text is not None and drift:     # planned with: the whole model, then pickled
        model = load_model(model_path, text=zlib.decompress(text).decode())
        parsed = model_pieces.pack(model)      # pickled in pieces: a smaller peak
    elif text is not None:      # pickled as read: the model held has no real servers
        packer = model_pieces.Packer()
        model = load_model(model_path, text=zlib.decompress(text).decode(),
                           spill=packer.spill)
        parsed, packer = packer.pieces(model), None
    watch = Watch(targets, model, 0, lock_timeout)     # reads the model to use
    watch.drifts = previous
    if drift:
        watch.check(refresh=False)
    current, drifts = watch.current, watch.drifts
    if parsed is not None:     # the model parsed here: indexed from its pieces once freed
        model = watch = current = None                   # (5 MiB less at 10,000 x 10)
        current = model_pieces.Pieces(parsed)
    return (*_index(current, vips, targets, known), drifts, parsed)


def _index(model, vips: bool, targets: dict, known: str | None) -> tuple:
    """(digest, pickled labelling index or None when its digest is ``known``) of
    ``model`` (None: no model, no index)."""
    from dcnet.metrics.elb import ServiceIndex

    index = None if model is None else pickle.dumps(ServiceIndex.of(
        model, vips, "haproxy" in targets), protocol=pickle.HIGHEST_PROTOCOL)
    digest = None if index is None else hashlib.sha256(index).hexdigest()
    return digest, None if digest == known else index
