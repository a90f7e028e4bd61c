"""elbctl's lazy commands: the name map agrees with what each module's register()
declares, every command resolves and prints its help, and starting elbctl imports
none of the lazy modules."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from dcnet.cli import elbctl, lazy

pytestmark = pytest.mark.unit
MODULES = sorted(set(elbctl.COMMANDS.values()) | set(elbctl.RENDER_COMMANDS.values()))


@pytest.mark.parametrize("module", MODULES)
def test_the_map_names_exactly_what_the_module_declares(module):
    declared = lazy.declared(module)
    assert set(declared[lazy.TOP]) == {n for n, m in elbctl.COMMANDS.items() if m == module}
    assert set(declared[lazy.RENDER]) == {
        n for n, m in elbctl.RENDER_COMMANDS.items() if m == module}


@pytest.mark.parametrize("args", [[name] for name in elbctl.COMMANDS]
                         + [["render", name] for name in elbctl.RENDER_COMMANDS])
def test_every_lazy_command_resolves_and_helps(args):
    result = CliRunner().invoke(elbctl.cli, [*args, "--help"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: cli {' '.join(args)} ")


def test_the_listing_shows_lazy_and_eager_commands():
    result = CliRunner().invoke(elbctl.cli, ["--help"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for name in [*elbctl.COMMANDS, "validate", "plan", "apply", "render"]:
        assert f"\n  {name} " in result.output


def test_an_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(elbctl.cli, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command 'no-such-command'" in result.output


def test_starting_elbctl_imports_no_lazy_module():
    code = ("import sys, dcnet.cli.elbctl as e; "
            "print(sorted(m for m in set(e.COMMANDS.values()) | set(e.RENDER_COMMANDS.values())"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
