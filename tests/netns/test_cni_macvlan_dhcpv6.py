"""Netns tests of macvlan mode dual stack with stateful DHCPv6 (``ipv6: dhcpv6``).

dnsmasq serves DHCPv4 and DHCPv6 (``NET6``::100-1ff) and sends "managed" router
advertisements; node n1 runs ``dcnet-agent`` with the host shim. A pod gets both leases,
the result lists both addresses with their gateways (IPv6: the RA's router), the pod
reaches a server on the segment and the node reaches the pod over both families, CHECK
verifies both, and DEL releases both at the server (its lease file is the witness).
"""

from __future__ import annotations

import os
import socket

import pytest

from dcnet.lab.cni_dhcp import NET, NET6, ROUTER, SERVER6, DhcpLab, pod_link, topology, wait_until
from dcnet.lab.cni_invoke import PluginError
from dcnet.sysio import netns
from tests.netns.test_cni_macvlan_v6 import (
    POD_ARGS,
    echo_server,
    link_local,
    shim_routes,
    split,
    talk,
)

pytestmark = pytest.mark.netns


@pytest.fixture
def lab6(lab_factory, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("netns test: needs root")
    made = DhcpLab(lab_factory(topology(("n1",), ipv6=True)), tmp_path, nodes=("n1",))
    made.start_dnsmasq(dhcpv6=True)
    made.start_agent("n1", hostShim=True, ipv6="dhcpv6")
    yield made
    made.close()


def runtime(lab: DhcpLab):
    return lab.runtime("n1", hostShim=True, ipv6="dhcpv6")


def test_pod_gets_a_dhcpv6_lease_beside_the_dhcpv4_one_and_del_releases_both(lab6):
    rt = runtime(lab6)
    path = lab6.pod("d6")
    name = path.rsplit("/", 1)[1]
    result = rt.add("d6-1", path, args=POD_ARGS.format("d6-1"))
    v4, v6 = split(result)
    ip4, ip6 = v4["address"].split("/")[0], v6["address"].split("/")[0]
    assert ip4.startswith(f"{NET}.1") and v4["gateway"] == ROUTER
    assert ip6.startswith(f"{NET6}1") and v6["address"].endswith("/128")
    assert v6["gateway"] == link_local(lab6, "dhcp")
    assert SERVER6 in result["dns"]["nameservers"] and "pods6.lab" in result["dns"]["search"]
    leases = lab6.server_leases()
    assert ip4 in leases and ip6 in leases
    record = lab6.journal("n1")["d6-1+eth0"]
    assert record["lease6"]["address"] == ip6 and record["duid6"]

    lan = echo_server(lab6.lab.netns("dhcp"), socket.AF_INET6, SERVER6)
    pod = echo_server(name, socket.AF_INET6, ip6)
    try:
        assert netns.run_in(name, talk, SERVER6) == b"hello " + SERVER6.encode()
        assert lab6.lab.call("n1", talk, ip6) == b"hello " + ip6.encode()
        assert f"{ip6} proto 217" in shim_routes(lab6, "-6")
    finally:
        lan.close()
        pod.close()
    rt.check("d6-1", path)
    rt.delete("d6-1", path)
    assert pod_link(path) is None and lab6.journal("n1") == {}
    assert ip6 not in shim_routes(lab6, "-6")
    wait_until(lambda: not {ip4, ip6} & set(lab6.server_leases()),
               "both releases at the server")


def test_agent_restart_resumes_the_dhcpv6_lease_and_del_still_releases_it(lab6):
    rt = runtime(lab6)
    path = lab6.pod("d6r")
    _v4, v6 = split(rt.add("d6r-1", path, args=POD_ARGS.format("d6r-1")))
    ip6 = v6["address"].split("/")[0]
    lab6.stop_agent("n1", kill=True)
    lab6.start_agent("n1", hostShim=True, ipv6="dhcpv6")
    wait_until(lambda: "DHCPv6: resumed" in lab6.agent_log("n1"), "the DHCPv6 client resumed")
    rt.check("d6r-1", path)
    rt.delete("d6r-1", path)
    wait_until(lambda: ip6 not in lab6.server_leases(), "the DHCPv6 release at the server")
    assert lab6.journal("n1") == {}


def test_no_dhcpv6_server_fails_add_naming_the_timeout(lab_factory, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("netns test: needs root")
    lab = DhcpLab(lab_factory(topology(("n1",), ipv6=True)), tmp_path, nodes=("n1",))
    try:
        lab.start_dnsmasq(ra=True)  # RAs (SLAAC) but no DHCPv6
        settings = {"mode": "dhcpv6", "timeout": 3}
        lab.start_agent("n1", ipv6=settings)
        path = lab.pod("nod6")
        with pytest.raises(PluginError) as caught:
            lab.runtime("n1", ipv6=settings).add("nod6-1", path,
                                                 args=POD_ARGS.format("nod6-1"))
        assert caught.value.code == 11
        assert "no DHCPv6 lease within ipv6.timeout (3s)" in caught.value.msg
        assert pod_link(path) is None and lab.journal("n1") == {}
    finally:
        lab.close()


def test_the_dhcpv6_lease_is_renewed_at_t1(lab6):
    """dnsmasq's shortest lease is 2 minutes: T1 is 60 s, so this test waits that long."""
    rt = runtime(lab6)
    path = lab6.pod("d6n")
    _v4, v6 = split(rt.add("d6n-1", path, args=POD_ARGS.format("d6n-1")))
    ip6 = v6["address"].split("/")[0]
    first = lab6.server_leases()[ip6]["expiry"]
    obtained = lab6.journal("n1")["d6n-1+eth0"]["lease6"]["obtained"]
    wait_until(lambda: lab6.journal("n1")["d6n-1+eth0"]["lease6"]["obtained"] > obtained,
               "a DHCPv6 renewal", 120, step=0.5)
    assert lab6.server_leases()[ip6]["expiry"] > first  # the server extended it
    assert f"renewed {ip6}" in lab6.agent_log("n1")
    rt.check("d6n-1", path)
    rt.delete("d6n-1", path)
    wait_until(lambda: ip6 not in lab6.server_leases(), "the DHCPv6 release at the server")


def test_del_with_the_agent_down_releases_the_dhcpv6_lease_when_it_is_back(lab6):
    """The plugin deletes the pod's link itself and queues the release; the agent, back,
    releases both leases from the host side (a temporary link with the pod's MAC)."""
    rt = runtime(lab6)
    path = lab6.pod("d6q")
    v4, v6 = split(rt.add("d6q-1", path, args=POD_ARGS.format("d6q-1")))
    ip4, ip6 = v4["address"].split("/")[0], v6["address"].split("/")[0]
    lab6.stop_agent("n1")
    rt.delete("d6q-1", path)
    assert pod_link(path) is None
    assert {ip4, ip6} <= set(lab6.server_leases())
    lab6.start_agent("n1", hostShim=True, ipv6="dhcpv6")
    wait_until(lambda: not {ip4, ip6} & set(lab6.server_leases()),
               "both releases from the host side")
    wait_until(lambda: lab6.journal("n1") == {}, "the record to go")
    links = lab6.lab.run("n1", ["ip", "-br", "link"]).stdout
    assert "dcn6" not in links and "dcnr" not in links
