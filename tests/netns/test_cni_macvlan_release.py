"""Netns tests: a MACVLAN DEL always gets the lease released (issue 13, defect 3).

Whatever state the pod is in at DEL (its interface deleted under the agent's DHCP client,
its namespace gone), the release reaches the DHCP server: sent from the host side with
the journaled lease (client id, address, server) over a temporary macvlan carrying the
pod's MAC, or, when even that cannot be sent, kept in the journal and the release queue
and retried by the agent. dnsmasq's lease file is the witness; pods are made through the
installed binary the way libcni runs it.
"""

from __future__ import annotations

import subprocess

import pytest

from dcnet.lab.cni_dhcp import DhcpLab, pod_link, topology, wait_until

pytestmark = pytest.mark.netns

POD_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={}"


@pytest.fixture
def private(lab_factory, tmp_path):
    made = DhcpLab(lab_factory(topology(("n1",))), tmp_path, nodes=("n1",))
    yield made
    made.close()


def _add(lab: DhcpLab, cid: str, path: str) -> str:
    result = lab.runtime("n1").add(cid, path, args=POD_ARGS.format(cid))
    return result["ips"][-1]["address"].split("/")[0]


def _pod_cmd(path: str, *argv: str) -> None:
    subprocess.run(["ip", "-n", path.rsplit("/", 1)[1], *argv], check=True)


def test_del_after_the_pod_interface_is_gone_still_releases(private):
    private.start_dnsmasq()
    private.start_agent("n1")
    path = private.pod("ifgone")
    ip = _add(private, "ifgone-1", path)
    assert ip in private.server_leases()
    _pod_cmd(path, "link", "del", "eth0")  # the runtime tore the interface down first
    assert pod_link(path) is None
    private.runtime("n1").delete("ifgone-1", path)
    wait_until(lambda: ip not in private.server_leases(), "the release reaching dnsmasq")
    assert private.journal("n1") == {}
    assert "over temporary dcnr" in private.agent_log("n1")


def test_a_release_that_cannot_be_sent_is_kept_and_retried(private):
    private.start_dnsmasq()
    private.start_agent("n1")
    path = private.pod("retry")
    ip = _add(private, "retry-1", path)
    _pod_cmd(path, "link", "del", "eth0")
    private.lab.run("n1", ["ip", "link", "set", "eth0", "down"])  # no way out for now
    private.runtime("n1").delete("retry-1", path)  # DEL still succeeds
    assert ip in private.server_leases()
    assert [p.name for p in private.queue_dir("n1").iterdir()] == ["retry-1+eth0.json"]
    assert list(private.journal("n1")) == ["retry-1+eth0"]  # the lease to release
    private.lab.run("n1", ["ip", "link", "set", "eth0", "up"])
    wait_until(lambda: ip not in private.server_leases(), "the retried release")
    wait_until(lambda: private.journal("n1") == {}, "the record to be dropped", 5)
    wait_until(lambda: not list(private.queue_dir("n1").iterdir()), "the queue to empty", 5)
