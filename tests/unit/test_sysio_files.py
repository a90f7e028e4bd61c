"""Unit tests of dcnet.sysio.files.atomic_write: content, mode, no temporary left behind,
the target untouched when the write fails."""

from __future__ import annotations

import os
import stat

import pytest

from dcnet.sysio.files import atomic_write

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("fsync", [True, False])
def test_atomic_write_replaces_content_and_sets_mode(tmp_path, fsync):
    target = tmp_path / "f.conf"
    target.write_text("old")
    atomic_write(target, "new \u00e9", mode=0o600, fsync=fsync)
    assert target.read_text(encoding="utf-8") == "new \u00e9"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["f.conf"]


def test_atomic_write_bytes_and_default_mode(tmp_path):
    target = tmp_path / "blob"
    old = os.umask(0o077)
    try:
        atomic_write(str(target), b"\x00\x01")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"\x00\x01"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644


def test_atomic_write_failure_keeps_target_and_removes_temporary(tmp_path):
    target = tmp_path / "dir-in-the-way"
    target.mkdir()
    (target / "child").write_text("x")
    with pytest.raises(OSError):
        atomic_write(target, "text")
    assert sorted(os.listdir(tmp_path)) == ["dir-in-the-way"]
    assert (target / "child").read_text() == "x"
