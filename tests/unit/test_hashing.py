"""Unit tests of dcnet.hashing: FNV-1a against published vectors; link names it derives."""

from __future__ import annotations

import pytest

from dcnet.cni.hostgw import host_veth_name
from dcnet.hashing import fnv1a_64

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("data", "expected"), [
    ("", 0xCBF29CE484222325),           # the offset basis
    ("a", 0xAF63DC4C8601EC8C),          # vectors from the FNV reference (isthe.com/chongo)
    (b"foobar", 0x85944171F73967E8),
])
def test_fnv1a_64_matches_the_reference_vectors(data, expected):
    assert fnv1a_64(data) == expected


def test_host_veth_name_is_stable():
    assert host_veth_name("c1", "eth0") == f"dcn{fnv1a_64('c1/eth0') >> 16:012x}"
    assert len(host_veth_name("c1", "eth0")) == 15


def test_macvlan_temporary_link_names_are_stable():
    from dcnet.cni.podns import TEMP_PREFIX, temp_name

    name = temp_name(TEMP_PREFIX, "c1", "eth0")
    assert name == f"{TEMP_PREFIX}{fnv1a_64('c1/eth0') >> 20:011x}" and len(name) == 15
