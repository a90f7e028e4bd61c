"""The traffic lab of the nft tests: :mod:`dcnet.lab.lvs_lab`'s topology (or another
built from busybox and a docroot) with a VIP on the director's ``lo`` (the nft target
does not manage addresses), and the target options for that director."""

from __future__ import annotations

import shutil
from typing import NamedTuple

import pytest

from dcnet.lab import lvs_lab as lvslab


class TrafficLab(NamedTuple):
    lab: object
    options: dict
    busybox: str
    docroot: str


def traffic_lab(lab_factory, tmp_path, vip: str, topology=lvslab.topology,
                **options) -> TrafficLab:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed")
    docroot = str(tmp_path / "www")
    lvslab.write_docroots(docroot)
    lab = lab_factory(topology(busybox, docroot))
    lab.run("director", ["ip", "addr", "add", f"{vip}/32", "dev", "lo"])
    options = {"netns": lab.netns("director"), "state_dir": str(tmp_path / "state"),
               **options}
    return TrafficLab(lab, options, busybox, docroot)
