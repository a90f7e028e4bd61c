"""dcnet/sysio/netns.py on this kernel: a named namespace is created and removed through
pyroute2 with its helper-process waits raised (pyroute2 kills a helper that has not
answered in 2 s, which failed a lab build in CI on a loaded machine)."""

from __future__ import annotations

import os
import uuid

import pytest
from pyroute2 import config

from dcnet.sysio import netns

pytestmark = pytest.mark.netns


def test_create_and_remove_with_the_helper_waits_raised():
    name = f"dcnet-t-{uuid.uuid4().hex[:8]}"
    try:
        netns.create(name)
        assert os.path.exists(netns.path_of(name))
        assert config.default_communicate_timeout >= netns.PYROUTE2_HELPER_TIMEOUT
        assert config.default_create_socket_timeout >= netns.PYROUTE2_HELPER_TIMEOUT
        with netns.iproute(name) as ipr:         # a socket made by pyroute2's helper
            assert [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()] == ["lo"]
    finally:
        netns.remove(name)
    assert not netns.exists(name)
