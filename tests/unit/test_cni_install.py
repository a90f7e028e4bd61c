"""``dcnet-cni install`` as operators run it: the conflist goes into ``--conf-dir``
(checked first, atomically, under a stable name) and nothing is written into the
installed Python package (issue 13, deployment)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import dcnet
from dcnet.cni.install import CONF_NAME, InstallError, install_conflist

CLI = os.path.join(os.path.dirname(sys.executable), "dcnet-cni")
DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "deploy")
EXAMPLES = [os.path.join(DEPLOY, "cni", name)
            for name in sorted(os.listdir(os.path.join(DEPLOY, "cni")))]


def package_copy(tmp_path) -> str:
    """A private copy of the dcnet package (others edit and byte-compile the tree we
    run from), without byte code; returns the directory that holds it."""
    root = tmp_path / "site"
    shutil.copytree(os.path.dirname(os.path.abspath(dcnet.__file__)), root / "dcnet",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return str(root)


def run_from(site: str, *argv: str) -> subprocess.CompletedProcess:
    """``dcnet-cni`` ARGV with the package copy at ``site`` (the interpreter writes no
    byte code itself, so whatever appears there was written by ``install``)."""
    env = {**os.environ, "PYTHONPATH": site, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-c", "from dcnet.cli.cni import main; main()",
                           *argv], capture_output=True, text=True, env=env, cwd=site)


def package_snapshot(site: str) -> dict[str, tuple[int, int]]:
    """Every file and directory under the package copy: (size, mtime_ns)."""
    root = os.path.join(site, "dcnet")
    seen = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            seen[path] = (info.st_size if name in files else 0, info.st_mtime_ns)
    return seen


@pytest.mark.parametrize("client", ["auto", "launcher", "python"])
def test_install_writes_nothing_into_the_package(tmp_path, client):
    site = package_copy(tmp_path)
    before = package_snapshot(site)
    done = run_from(site, "install", "--bin-dir", str(tmp_path / "bin"), "--client", client)
    assert done.returncode == 0, done.stderr
    assert package_snapshot(site) == before
    with open(tmp_path / "bin" / "dcnet-python") as handle:
        assert repr(site) in handle.read()  # the copy is the package it installed


def test_conf_dir_gets_the_conflist_under_a_stable_name(tmp_path):
    source = tmp_path / "mine.conflist"
    with open(EXAMPLES[0]) as handle:
        conf = json.load(handle)
    source.write_text(json.dumps(conf))
    conf_dir = tmp_path / "net.d"
    site = package_copy(tmp_path)
    before = package_snapshot(site)
    done = run_from(site, "install", "--bin-dir", str(tmp_path / "bin"), "--client",
                    "launcher", "--conf-dir", str(conf_dir), "--conflist", str(source))
    assert done.returncode == 0, done.stderr
    target = conf_dir / CONF_NAME
    assert done.stdout.split() == [str(tmp_path / "bin" / "dcnet"), str(target)]
    assert json.loads(target.read_text()) == conf
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    # a re-install with another network replaces the same file, leaves no temporary
    conf["name"] = "other"
    source.write_text(json.dumps(conf))
    install_conflist(str(conf_dir), str(source))
    assert sorted(os.listdir(conf_dir)) == [CONF_NAME]
    assert json.loads(target.read_text())["name"] == "other"
    assert package_snapshot(site) == before


def test_a_bad_conflist_is_refused_before_anything_is_written(tmp_path):
    source = tmp_path / "bad.conflist"
    source.write_text(json.dumps({"cniVersion": "1.1.0", "name": "podnet", "plugins": [
        {"type": "dcnet", "mode": "host-gw", "mtu": 20}]}))
    done = subprocess.run([CLI, "install", "--bin-dir", str(tmp_path / "bin"),
                           "--conf-dir", str(tmp_path / "net.d"), "--conflist",
                           str(source)], capture_output=True, text=True)
    assert done.returncode != 0
    assert "mtu" in done.stderr
    assert not (tmp_path / "bin").exists() and not (tmp_path / "net.d").exists()
    with pytest.raises(InstallError, match="file name"):
        install_conflist(str(tmp_path / "net.d"), EXAMPLES[0], "../escape.conflist")
    half = subprocess.run([CLI, "install", "--bin-dir", str(tmp_path / "bin"),
                           "--conf-dir", str(tmp_path / "net.d")],
                          capture_output=True, text=True)
    assert half.returncode == 2 and "go together" in half.stderr


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_shipped_example_conflists_parse(path, tmp_path):
    assert install_conflist(str(tmp_path), path).endswith(CONF_NAME)
