"""Checks of the carriers' client CIDR lists before they become BIND ACLs (pure).

BIND matches views in order and the first match wins silently, so a client prefix in two
carriers' lists would quietly go to whichever view comes first: :func:`overlaps` (from
:mod:`dcnet.model.cidrlists`, which model validation also runs) finds every such pair,
and :func:`check_overlaps` refuses them. :func:`change_guard` refuses a
new list that changes more than ``limit`` (30%) of a carrier's installed prefixes (added
plus removed, over the installed count), unless forced, so a truncated or wrong list file
cannot silently move most of a carrier's clients to another view.
:func:`baseline_guard` also compares the new list with a recorded *baseline* (the list
at the first install or at the last forced one), counting the baseline's prefixes the
new list drops, so repeated small cuts are caught: 100 -> 70 passes (30%), 70 -> 50
passes against the installed list (29%) but drops 50% of the baseline and is refused.
:func:`next_baseline` is what to record after an apply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dcnet.model import Carrier
from dcnet.model.cidrlists import Overlap, overlaps
from dcnet.model.types import IPNetwork

__all__ = ["CarrierListError", "ListChange", "Overlap", "baseline_guard", "change_guard",
           "check_overlaps", "list_changes", "next_baseline", "overlaps"]

CHANGE_LIMIT = 0.30


class CarrierListError(ValueError):
    """Carrier lists that must not reach named; ``problems`` lists each one."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def check_overlaps(carriers: Sequence[Carrier]) -> None:
    found = overlaps(carriers)
    if found:
        raise CarrierListError([str(o) for o in found])


@dataclass(frozen=True)
class ListChange:
    carrier: str
    installed: int
    added: int
    removed: int

    @property
    def fraction(self) -> float:
        return (self.added + self.removed) / self.installed if self.installed else 0.0

    def __str__(self) -> str:
        return (f"carrier {self.carrier!r}: the new client list changes "
                f"{self.fraction:.0%} of its {self.installed} installed prefixes "
                f"(+{self.added} -{self.removed}); more than {CHANGE_LIMIT:.0%} needs --force")


def list_changes(installed: Mapping[str, Sequence[IPNetwork]],
                 new: Mapping[str, Sequence[IPNetwork]]) -> list[ListChange]:
    """How each installed carrier list changes (a carrier dropped loses all its prefixes)."""
    out = []
    for carrier, old in installed.items():
        old_set, new_set = set(old), set(new.get(carrier, ()))
        out.append(ListChange(carrier, len(old_set), len(new_set - old_set),
                              len(old_set - new_set)))
    return out


def change_guard(installed: Mapping[str, Sequence[IPNetwork]],
                 new: Mapping[str, Sequence[IPNetwork]], *, force: bool = False,
                 limit: float = CHANGE_LIMIT) -> list[ListChange]:
    """Raise CarrierListError for lists changing more than ``limit`` unless ``force``;
    returns the too-large changes (allowed only when forced)."""
    too_big = [c for c in list_changes(installed, new) if c.fraction > limit]
    if too_big and not force:
        raise CarrierListError([str(c) for c in too_big])
    return too_big


@dataclass(frozen=True)
class BaselineCut:
    carrier: str
    baseline: int
    removed: int

    @property
    def fraction(self) -> float:
        return self.removed / self.baseline if self.baseline else 0.0

    def __str__(self) -> str:
        return (f"carrier {self.carrier!r}: the new client list drops {self.removed} of the "
                f"{self.baseline} prefixes of its recorded baseline ({self.fraction:.0%}, "
                f"over several applies); more than {CHANGE_LIMIT:.0%} needs --force")


def baseline_guard(baseline: Mapping[str, Sequence[str]],
                   new: Mapping[str, Sequence[IPNetwork]], *, force: bool = False,
                   limit: float = CHANGE_LIMIT) -> list[BaselineCut]:
    """Raise CarrierListError when a list drops more than ``limit`` of its baseline's
    prefixes, unless ``force``; returns the cuts that are too large (allowed if forced)."""
    cuts = []
    for carrier, old in baseline.items():
        old_set, new_set = set(old), {str(n) for n in new.get(carrier, ())}
        cut = BaselineCut(carrier, len(old_set), len(old_set - new_set))
        if cut.fraction > limit:
            cuts.append(cut)
    if cuts and not force:
        raise CarrierListError([str(c) for c in cuts])
    return cuts


def next_baseline(baseline: Mapping[str, Sequence[str]],
                  new: Mapping[str, Sequence[IPNetwork]], forced: bool) -> dict[str, list[str]]:
    """The baseline to record after applying ``new``: a carrier's baseline is kept,
    unless the apply was forced or the carrier has none yet (then its new list)."""
    out = {}
    for carrier, networks in new.items():
        if forced or carrier not in baseline:
            out[carrier] = sorted(str(n) for n in networks)
        else:
            out[carrier] = list(baseline[carrier])
    return out
