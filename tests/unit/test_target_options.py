"""Every built-in target's options are declared apart from the target
(``registry.BUILTIN_OPTIONS``): the same tuple the target class carries, and an
``elbctl`` command line offers every target's flags without importing any target."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dcnet.target import registry

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", sorted(registry.BUILTIN))
def test_the_declared_options_are_the_target_classes(name):
    assert registry.target_options(name) is registry.target_class(name).options


def test_unknown_target_options_are_refused():
    with pytest.raises(registry.UnknownTarget):
        registry.target_options("nope")


def test_elbctl_offers_every_targets_flags_without_importing_a_target():
    code = """
import sys
from click.testing import CliRunner
from dcnet.cli.elbctl import cli
out = CliRunner().invoke(cli, ["apply", "--help"]).output
flags = ["--lvs-netns", "--haproxy-run-dir", "--nft-dr", "--dns-dir"]
heavy = ["jinja2", "numpy", "pyroute2", "dcnet.lvs.backend", "dcnet.haproxy.backend",
         "dcnet.nft.target", "dcnet.dns.backend"]
print(sorted(f for f in flags if f not in out), sorted(m for m in heavy if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[] []", done.stdout + done.stderr
