"""Permissions of issue 14: ``elbctl render haproxy -o`` writes 0600 into a directory it
makes 0700 (an existing directory is left alone), and the etcd agent's model cache is
0700 (made so, or tightened when it is ours)."""

from __future__ import annotations

import os
import stat

import yaml
from click.testing import CliRunner

from dcnet.cli.elbctl import cli
from dcnet.elbstore.agent import Agent
from dcnet.lab import haproxy_lab as hlab


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_render_output_directory_0700_and_file_0600(tmp_path):
    model = tmp_path / "m.yaml"
    model.write_text(yaml.safe_dump(hlab.model_data({hlab.server_address(1): 1})))
    out = tmp_path / "new" / "haproxy.cfg"
    result = CliRunner().invoke(cli, ["render", "haproxy", "-f", str(model), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert mode(out.parent) == 0o700 and mode(out) == 0o600
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    result = CliRunner().invoke(cli, ["render", "haproxy", "-f", str(model), "-o",
                                      str(shared / "haproxy.cfg")])
    assert result.exit_code == 0, result.output
    assert mode(shared) == 0o755 and mode(shared / "haproxy.cfg") == 0o600


def test_agent_cache_is_made_and_kept_0700(tmp_path):
    agent = Agent.__new__(Agent)          # the cache rule alone, without etcd
    agent.cache_dir = str(tmp_path / "cache" / "d1")
    agent._private_cache()
    assert mode(agent.cache_dir) == 0o700
    os.chmod(agent.cache_dir, 0o755)
    agent._private_cache()
    assert mode(agent.cache_dir) == 0o700
