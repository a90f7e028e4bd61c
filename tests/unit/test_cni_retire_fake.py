"""``dcnet.cni.reaper.retire`` over the fake rtnetlink layer (:mod:`dcnet.cni.fake_rtnl`,
kept honest by tests/netns/test_cni_rtnl.py): without a reaper the host veth is deleted
at once; with one it is set down, renamed to its dying name (the pod's name is free for a
new ADD) and queued; a dying twin not yet reaped makes it delete the link instead."""

from __future__ import annotations

import queue
from types import SimpleNamespace

import pytest

from dcnet.cni import reaper
from dcnet.cni.fake_rtnl import FakeKernel
from dcnet.cni.rtnl import IFF_UP

pytestmark = pytest.mark.unit

HOST = "dcn0123456789a"


@pytest.fixture
def kernel():
    kernel = FakeKernel()
    kernel.netlink("node").add_veth(HOST, "eth0", kernel.fd("pod"), 1500)
    return kernel


@pytest.fixture
def agent(monkeypatch):
    """A reaper as the agent has one, without its thread: what retire queues stays."""
    stand_in = SimpleNamespace(queue=queue.Queue())
    monkeypatch.setattr(reaper, "_reaper", stand_in)
    return stand_in


def queued(agent) -> list[str]:
    out = []
    while not agent.queue.empty():
        out.append(agent.queue.get_nowait())
    return out


def test_without_a_reaper_the_link_is_deleted(kernel, monkeypatch):
    monkeypatch.setattr(reaper, "_reaper", None)
    node, pod = kernel.netlink("node"), kernel.netlink("pod")
    assert reaper.retire(node, HOST) is True
    assert node.link(HOST) is None and pod.link("eth0") is None      # the pair is gone
    assert reaper.retire(node, HOST) is False


def test_with_a_reaper_the_link_is_retired_and_queued(kernel, agent):
    node, pod = kernel.netlink("node"), kernel.netlink("pod")
    index = node.link(HOST)["index"]
    assert reaper.retire(node, HOST) is True
    dying = reaper.dying_name(HOST)
    link = node.link(dying)
    assert link is not None and link["index"] == index and not link["flags"] & IFF_UP
    assert node.link(HOST) is None and queued(agent) == [dying]
    assert pod.link("eth0") is not None                 # deleted later, by the reaper
    node.add_veth(HOST, "eth1", kernel.fd("pod"), 1500)     # the name is free at once
    assert node.link(HOST) is not None


def test_a_dying_twin_makes_retire_delete(kernel, agent):
    node = kernel.netlink("node")
    assert reaper.retire(node, HOST) is True
    assert queued(agent) == [reaper.dying_name(HOST)]
    node.add_veth(HOST, "eth1", kernel.fd("pod"), 1500)     # a new ADD of the same pod
    assert reaper.retire(node, HOST) is True               # rename: EEXIST -> delete
    assert node.link(HOST) is None and queued(agent) == []
    assert kernel.netlink("pod").link("eth1") is None
    assert node.link(reaper.dying_name(HOST)) is not None   # the twin, still queued once
    assert reaper.retire(node, "dcnmissing0000") is False
