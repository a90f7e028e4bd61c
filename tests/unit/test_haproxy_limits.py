"""HAProxy's descriptor need (dcnet.haproxy.limits), against figures HAProxy 2.6 printed."""

import os

import pytest

from dcnet.haproxy import limits

pytestmark = pytest.mark.unit

CONFIG = """global
    maxconn 15000
    stats socket /run/x.sock mode 600 level admin
defaults
    maxconn 100
frontend f
    bind 127.0.0.1:1
    bind 127.0.0.1:2
frontend g
    bind 127.0.0.1:3
backend b
    server s1 127.0.0.1:1 maxconn 5
"""


def test_need_matches_haproxy_own_figures():
    # "Cannot raise FD limit to 40017" (maxconn 20000, 1 bind, no sockets besides)
    assert limits.needed_fds(20000, 1) == 40017
    assert limits.needed_fds(15000, 3) == 30019


def test_global_maxconn_and_listeners_are_read_from_the_file():
    assert limits.global_maxconn(CONFIG) == 15000
    assert limits.listeners(CONFIG) == 3 + 1 + 1   # binds, stats socket, master CLI
    assert limits.global_maxconn("defaults\n    mode tcp\n") is None


def test_problem_names_the_field_and_a_value_that_fits():
    limit = limits.hard_nofile(os.getpid())
    if limit is None:
        pytest.skip("this process has no finite RLIMIT_NOFILE")
    too_big = CONFIG.replace("maxconn 15000", f"maxconn {limit}")
    text = limits.problem(too_big, os.getpid())
    most = (limit - 5 - limits.SPARE_FDS) // 2
    assert text.startswith(f"haproxy.maxconn: {limit} needs {2 * limit + 21} file descriptors")
    assert f"set haproxy.maxconn to {most} or less" in text
    assert limits.needed_fds(most, 5) <= limit < limits.needed_fds(most + 1, 5) + 1
    assert limits.problem(CONFIG.replace("maxconn 15000", f"maxconn {most}"), os.getpid()) \
        is None


def test_default_maxconn_fits_the_descriptor_limit(monkeypatch):
    monkeypatch.setattr(limits, "hard_nofile", lambda pid=None: 20000)
    maxconn, warning = limits.fitting_maxconn(3)
    margin = limits.DEFAULT_MARGIN       # HAProxy needs more than its estimate in -W mode
    assert limits.needed_fds(maxconn, 3) + margin <= 20000 < \
        limits.needed_fds(maxconn + 1, 3) + margin
    assert f"using {maxconn} instead of 20000" in warning
    monkeypatch.setattr(limits, "hard_nofile", lambda pid=None: 1 << 20)
    assert limits.fitting_maxconn(3) == (limits.DEFAULT_MAXCONN, None)


def test_a_model_without_maxconn_renders_one_that_starts(monkeypatch):
    import yaml

    from dcnet.haproxy.check import render_valid
    from dcnet.haproxy.paths import Paths
    from dcnet.lab import haproxy_lab as hlab
    from dcnet.model import parse_model

    data = hlab.model_data({hlab.server_address(1): 1})
    del data["haproxy"]["maxconn"]
    model = parse_model(yaml.safe_dump(data))
    assert model.haproxy.maxconn is None
    monkeypatch.setattr(limits, "hard_nofile", lambda pid=None: 20000)
    checked = render_valid(model, Paths("/run/x"))
    assert limits.problem(checked.rendered.text) is None
    assert "haproxy.maxconn not set" in checked.warning
