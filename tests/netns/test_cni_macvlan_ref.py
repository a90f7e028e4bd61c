"""The macvlan/DHCP scenarios against the reference ``macvlan`` + ``dhcp`` plugins.

Debian's containernetworking-plugins on the same kind of lab (dnsmasq on the underlay,
the reference DHCP daemon started by the test in the node namespace). These tests pin
down the reference behaviour that docs/cni.md compares dcnet with; the matching dcnet
behaviour is tested in test_cni_macvlan.py.
"""

from __future__ import annotations

import time

import pytest

from dcnet.lab.cni_dhcp import DhcpLab, topology, wait_until
from dcnet.lab.cni_invoke import CniRuntime

pytestmark = pytest.mark.netns

REF_DIR = "/usr/lib/cni"
ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web"


class Reference:
    """The reference DHCP daemon on n1 and a runtime for macvlan + dhcp."""

    def __init__(self, made: DhcpLab):
        self.made = made
        self.socket = made.root / "ref-dhcp.sock"
        self.starts = 0
        self.daemon = None
        self.runtime = CniRuntime(
            {"cniVersion": "1.0.0", "name": "refnet", "type": "macvlan", "master": "eth0",
             "ipam": {"type": "dhcp", "daemonSocketPath": str(self.socket)}},
            [REF_DIR], made.lab.netns("n1"))

    def start(self) -> None:
        self.starts += 1
        if self.socket.exists():
            self.socket.unlink()
        self.daemon = self.made.lab.start(
            "n1", [f"{REF_DIR}/dhcp", "daemon", "-socketpath", str(self.socket)],
            name=f"ref-dhcp-{self.starts}")
        wait_until(self.socket.exists, "the reference dhcp daemon")

    def stop(self) -> None:
        self.daemon.terminate()
        self.daemon.wait(timeout=10)


@pytest.fixture
def reference(lab_factory, tmp_path):
    made = DhcpLab(lab_factory(topology(("n1",))), tmp_path, nodes=("n1",))
    made.start_dnsmasq(t1=3, t2=5)
    ref = Reference(made)
    ref.start()
    yield ref
    made.close()


def capture_release(made: DhcpLab, name: str, delete) -> str:
    """The source of the first DHCP request the server's link sees during ``delete()``
    (tcpdump in the server's namespace; the lab has no other DHCP traffic meanwhile)."""
    dump = made.lab.start("dhcp", ["tcpdump", "-l", "-n", "-i", "eth0", "-c", "1",
                                   "udp dst port 67"], name=name)
    wait_until(lambda: "listening on" in made.log(name), "tcpdump")
    delete()
    wait_until(lambda: dump.poll() is not None, "the captured release", 10)
    line = next(li for li in made.log(name).splitlines() if "> " in li and ".67:" in li)
    return line.split(" IP ", 1)[1].split(" > ", 1)[0].rsplit(".", 1)[0]


def test_release_is_sent_from_the_leased_address_and_honoured(reference):
    """dcnet's DHCPRELEASE leaves from the leased address; the reference's from 0.0.0.0.
    dnsmasq honours both (stricter servers drop the latter: the leaked-leases pain).
    The reference's client id is built from the container id (a new sandbox of the same
    pod is a new client) and it sends no hostname; dcnet sends the pod's name."""
    made = reference.made
    made.start_agent("n1")
    ours = made.runtime("n1")
    our_path, ref_path = made.pod("ourpod"), made.pod("refpod")
    our_ip = ours.add("our-1", our_path, args=ARGS)["ips"][0]["address"].split("/")[0]
    result = reference.runtime.add("ref-1", ref_path, args=ARGS)
    ref_ip = result["ips"][0]["address"].split("/")[0]
    leases = made.server_leases()
    assert leases[our_ip]["hostname"] == "web" and leases[ref_ip]["hostname"] == "*"
    client_id = bytes.fromhex(leases[ref_ip]["clientid"].replace(":", ""))
    assert b"ref-1" in client_id  # containerID/network/ifname
    assert capture_release(made, "dump-ours", lambda: ours.delete("our-1", our_path)) == our_ip
    assert capture_release(made, "dump-ref", lambda: reference.runtime.delete(
        "ref-1", ref_path)) == "0.0.0.0"
    wait_until(lambda: not {our_ip, ref_ip} & set(made.server_leases()), "both releases", 10)


def test_reference_daemon_restart_stops_renewals(reference):
    """The reference daemon keeps leases in memory only: after a restart nobody renews
    and DEL releases nothing: the lease leaks until it expires (dcnet resumes from its
    journal, see test_renewal_and_agent_killed_mid_lease)."""
    made = reference.made
    path = made.pod("refrenew")
    ip = reference.runtime.add("ref-2", path, args=ARGS)["ips"][0]["address"].split("/")[0]
    first = made.server_leases()[ip]["expiry"]
    wait_until(lambda: made.server_leases()[ip]["expiry"] > first, "a renewal", 20)
    reference.stop()
    reference.start()
    before = made.server_leases()[ip]["expiry"]
    time.sleep(3 * 3 + 1)  # three T1 periods: a live client would have renewed
    assert made.server_leases()[ip]["expiry"] == before
    reference.runtime.delete("ref-2", path)
    time.sleep(1)
    assert ip in made.server_leases()
