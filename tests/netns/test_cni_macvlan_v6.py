"""Netns tests of macvlan mode dual stack: DHCPv4 leases plus SLAAC from router
advertisements, and the host shim for both families.

dnsmasq on the underlay serves DHCPv4 and router advertisements of ``NET6``/64
(``ra-only``: no DHCPv6); node n1 runs ``dcnet-agent`` with ``ipv6: slaac`` and the host
shim. A pod gets both addresses, the CNI result lists both with their gateways (the
IPv6 one is the router's link-local address), the pod reaches a server on the segment
over both families, the node reaches the pod over both through the shim, CHECK verifies
both, and DEL leaves no lease, address, link or shim route behind.
"""

from __future__ import annotations

import json
import os
import socket
import threading

import pytest

from dcnet.lab.builder import Lab
from dcnet.lab.cni_dhcp import (
    NET,
    NET6,
    ROUTER,
    SERVER,
    SERVER6,
    DhcpLab,
    pod_ip,
    pod_ip6,
    pod_link,
    topology,
    wait_until,
)
from dcnet.lab.cni_invoke import PluginError
from dcnet.sysio import netns

pytestmark = pytest.mark.netns

POD_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={}"
PORT = 7006


@pytest.fixture(scope="module")
def dual(tmp_path_factory):
    """n1 (ipv6 slaac, host shim) and n2 (ipv6 slaac, no shim) with agents; dnsmasq with
    DHCPv4 and RAs."""
    if os.geteuid() != 0:
        pytest.skip("netns test: needs root")
    root = tmp_path_factory.mktemp("dcnet-macvlan-v6")
    with Lab(topology(("n1", "n2"), ipv6=True)) as lab:
        made = DhcpLab(lab, root)
        try:
            made.start_dnsmasq(ra=True)
            made.start_agent("n1", hostShim=True, ipv6="slaac")
            made.start_agent("n2", ipv6="slaac")
            yield made
        finally:
            made.close()


def runtime(lab: DhcpLab, version: str = "1.1.0", **extra):
    return lab.runtime("n1", version, hostShim=True, ipv6="slaac", **extra)


def _listen(family: int, ip: str) -> socket.socket:
    sock = socket.socket(family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((ip, PORT))
    sock.listen(4)
    return sock


def echo_server(namespace: str, family: int, ip: str) -> socket.socket:
    """A TCP echo server bound to ``ip`` inside ``namespace`` (closed by the caller)."""
    sock = netns.run_in(namespace, _listen, family, ip)

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(conn.recv(64))
    threading.Thread(target=serve, daemon=True).start()
    return sock


def talk(ip: str) -> bytes:
    try:
        with socket.create_connection((ip, PORT), timeout=3) as conn:
            conn.sendall(b"hello " + ip.encode())
            return conn.recv(64)
    except OSError as exc:
        return f"error: {exc}".encode()


def link_local(lab: DhcpLab, host: str) -> str:
    out = lab.lab.run(host, ["ip", "-j", "-6", "addr", "show", "dev", "eth0", "scope",
                             "link"]).stdout
    return next(a["local"] for a in json.loads(out)[0]["addr_info"] if "local" in a)


def shim_routes(lab: DhcpLab, family: str) -> str:
    return lab.lab.run("n1", ["ip", family, "route", "show", "dev", "dcnshim0"]).stdout


def split(result: dict) -> tuple[dict, dict]:
    v4 = [ip for ip in result["ips"] if ":" not in ip["address"]]
    v6 = [ip for ip in result["ips"] if ":" in ip["address"]]
    assert len(v4) == 1 and len(v6) == 1, result
    return v4[0], v6[0]


def test_pod_gets_both_families_reaches_the_lan_and_the_node_reaches_it(dual):
    rt = runtime(dual)
    path = dual.pod("dual")
    name = path.rsplit("/", 1)[1]
    result = rt.add("dual-1", path, args=POD_ARGS.format("dual-1"))
    v4, v6 = split(result)
    ip4, ip6 = v4["address"].split("/")[0], v6["address"].split("/")[0]
    assert ip4.startswith(f"{NET}.1") and v4["gateway"] == ROUTER
    assert ip6.startswith(NET6) and v6["address"].endswith("/64")
    assert v6["gateway"] == link_local(dual, "dhcp")  # the RA's router, link-local
    assert v4["interface"] == v6["interface"] == 0
    assert {"dst": "0.0.0.0/0", "gw": ROUTER} in result["routes"]
    assert {"dst": "::/0", "gw": v6["gateway"]} in result["routes"]
    assert pod_ip(path) == [v4["address"]] and pod_ip6(path) == [v6["address"]]
    default6 = dual.lab.run("n1", ["ip", "-n", name, "-6", "route", "show",
                                   "default"]).stdout
    assert f"via {v6['gateway']} dev eth0" in default6
    record = dual.journal("n1")["dual-1+eth0"]
    assert record["configured6"] == {"address": v6["address"], "gateway": v6["gateway"]}

    lan = [echo_server(dual.lab.netns("dhcp"), socket.AF_INET, SERVER),
           echo_server(dual.lab.netns("dhcp"), socket.AF_INET6, SERVER6)]
    pod = [echo_server(name, socket.AF_INET, ip4), echo_server(name, socket.AF_INET6, ip6)]
    try:
        # the pod reaches a server on the segment over both families
        for server in (SERVER, SERVER6):
            assert netns.run_in(name, talk, server) == b"hello " + server.encode()
        # the node reaches its own pod over both, through the shim
        for ip in (ip4, ip6):
            assert dual.lab.call("n1", talk, ip) == b"hello " + ip.encode()
        assert f"{ip4} proto 217" in shim_routes(dual, "-4")
        assert f"{ip6} proto 217" in shim_routes(dual, "-6")
    finally:
        for server in lan + pod:
            server.close()

    for _ in range(2):
        rt.check("dual-1", path)
    rt.delete("dual-1", path)
    assert pod_link(path) is None
    assert ip4 not in shim_routes(dual, "-4") and ip6 not in shim_routes(dual, "-6")
    assert dual.journal("n1") == {}
    wait_until(lambda: ip4 not in dual.server_leases(), "the DHCPv4 release at the server")
    rt.delete("dual-1", path)  # repeatable


def test_without_the_shim_the_node_cannot_reach_its_pod_over_ipv6(dual):
    """The control for the shim tests: a macvlan's parent cannot talk to its children."""
    rt = dual.runtime("n2", "1.1.0", ipv6="slaac")
    path = dual.pod("noshim")
    name = path.rsplit("/", 1)[1]
    _v4, v6 = split(rt.add("noshim-1", path, args=POD_ARGS.format("noshim-1")))
    ip6 = v6["address"].split("/")[0]
    server = echo_server(name, socket.AF_INET6, ip6)
    try:
        assert dual.lab.call("n2", talk, ip6).startswith(b"error")
        assert dual.lab.call("n1", talk, ip6) == b"hello " + ip6.encode()  # via n1's shim
    finally:
        server.close()
    rt.delete("noshim-1", path)
    assert dual.journal("n2") == {}


def test_check_detects_a_missing_ipv6_address_and_route(dual):
    rt = runtime(dual)
    path = dual.pod("drift6")
    name = path.rsplit("/", 1)[1]
    _v4, v6 = split(rt.add("drift6-1", path, args=POD_ARGS.format("drift6-1")))
    rt.check("drift6-1", path)
    dual.lab.run("n1", ["ip", "-n", name, "-6", "route", "del", "default"])
    with pytest.raises(PluginError) as caught:
        rt.check("drift6-1", path)
    assert caught.value.code == 103 and "IPv6 default route" in caught.value.msg
    dual.lab.run("n1", ["ip", "-n", name, "-6", "addr", "del", v6["address"], "dev", "eth0"])
    with pytest.raises(PluginError) as caught:
        rt.check("drift6-1", path)
    assert caught.value.code == 103 and v6["address"] in caught.value.msg
    rt.delete("drift6-1", path)
    assert pod_link(path) is None and dual.journal("n1") == {}


def test_a_changed_slaac_address_is_followed_by_journal_and_shim(dual):
    """Renumbering as the pod sees it: its address replaced by another in the prefix.
    Housekeeping journals the new one and moves the shim route; CHECK of the old
    prevResult answers 103; DEL removes the new route."""
    rt = runtime(dual)
    path = dual.pod("renum")
    name = path.rsplit("/", 1)[1]
    _v4, v6 = split(rt.add("renum-1", path, args=POD_ARGS.format("renum-1")))
    new = f"{NET6}abcd"
    netns.sysctl_set(name, "net.ipv6.conf.eth0.autoconf", "0")  # RAs must not bring it back
    dual.lab.run("n1", ["ip", "-n", name, "addr", "add", f"{new}/64", "dev", "eth0", "nodad"])
    dual.lab.run("n1", ["ip", "-n", name, "addr", "del", v6["address"], "dev", "eth0"])
    wait_until(lambda: dual.journal("n1")["renum-1+eth0"]["configured6"]["address"]
               == f"{new}/64", "housekeeping to follow the new address")
    assert f"{new} proto 217" in shim_routes(dual, "-6")
    assert v6["address"].split("/")[0] not in shim_routes(dual, "-6")
    server = echo_server(name, socket.AF_INET6, new)
    try:
        assert dual.lab.call("n1", talk, new) == b"hello " + new.encode()
    finally:
        server.close()
    with pytest.raises(PluginError) as caught:
        rt.check("renum-1", path)
    assert caught.value.code == 103 and v6["address"] in caught.value.msg
    rt.delete("renum-1", path)
    assert new not in shim_routes(dual, "-6") and dual.journal("n1") == {}


def test_older_spec_versions_mark_the_ipv6_address(dual):
    rt = runtime(dual, "0.4.0")
    path = dual.pod("old6")
    result = rt.add("old6-1", path, args=POD_ARGS.format("old6-1"))
    versions = sorted(ip["version"] for ip in result["ips"])
    assert versions == ["4", "6"]
    rt.check("old6-1", path)
    rt.delete("old6-1", path)


def test_stable_privacy_gives_a_pod_the_same_address_in_every_incarnation(dual):
    settings = {"mode": "slaac", "addrGenMode": "stable-privacy"}
    rt = dual.runtime("n1", "1.1.0", hostShim=True, ipv6=settings)
    found = []
    for incarnation in ("a", "b"):
        path = dual.pod(f"stable{incarnation}")
        _v4, v6 = split(rt.add(f"stable-{incarnation}", path,
                               args=POD_ARGS.format("stable-pod")))
        found.append(v6["address"])
        rt.delete(f"stable-{incarnation}", path)
    assert found[0] == found[1]
    # not the EUI-64 address of a random MAC (ff:fe in the middle of the interface id)
    assert "ff:fe" not in found[0]


def test_bad_ipv6_settings_are_refused_naming_the_field(dual):
    path = dual.pod("bad6")
    cases = [("bogus", "ipv6", "'bogus'"),
             ({"mode": "slaac", "timeout": 0}, "ipv6.timeout", "1..3600"),
             ({"mode": "slaac", "addrGenMode": "random"}, "ipv6.addrGenMode", "'random'")]
    for value, field, words in cases:
        with pytest.raises(PluginError) as caught:
            dual.runtime("n1", "1.1.0", hostShim=True, ipv6=value).add(
                "bad6-1", path, args=POD_ARGS.format("bad6-1"))
        assert caught.value.code == 7, caught.value.msg
        assert f"invalid network config: {field}: " in caught.value.msg
        assert words in caught.value.msg
    assert pod_link(path) is None and dual.journal("n1") == {}


def test_no_router_advertisement_fails_add_naming_the_timeout_and_leaves_nothing(
        lab_factory, tmp_path):
    lab = DhcpLab(lab_factory(topology(("n1",), ipv6=True)), tmp_path, nodes=("n1",))
    try:
        lab.start_dnsmasq()  # DHCPv4 only: no router advertisements
        lab.start_agent("n1", ipv6={"mode": "slaac", "timeout": 3})
        path = lab.pod("nora")
        rt = lab.runtime("n1", ipv6={"mode": "slaac", "timeout": 3})
        with pytest.raises(PluginError) as caught:
            rt.add("nora-1", path, args=POD_ARGS.format("nora-1"))
        assert caught.value.code == 11
        assert "within ipv6.timeout (3s)" in caught.value.msg
        assert pod_link(path) is None and lab.journal("n1") == {}
        # the DHCPv4 lease the failed ADD took is released
        wait_until(lambda: not lab.server_leases(), "the failed ADD's release")
    finally:
        lab.close()


def test_agent_restart_with_the_shim_gone_puts_both_shim_routes_back(lab_factory, tmp_path):
    """SIGKILL the agent, delete the shim while it is down: the restarted agent makes the
    shim again with the node's addresses and both of the pod's routes; CHECK and DEL work."""
    lab = DhcpLab(lab_factory(topology(("n1",), ipv6=True)), tmp_path, nodes=("n1",))
    try:
        lab.start_dnsmasq(ra=True)
        lab.start_agent("n1", hostShim=True, ipv6="slaac")
        rt = runtime(lab)
        path = lab.pod("again6")
        name = path.rsplit("/", 1)[1]
        v4, v6 = split(rt.add("again6-1", path, args=POD_ARGS.format("again6-1")))
        ip4, ip6 = v4["address"].split("/")[0], v6["address"].split("/")[0]
        lab.stop_agent("n1", kill=True)
        lab.lab.run("n1", ["ip", "link", "del", "dcnshim0"])
        lab.start_agent("n1", hostShim=True, ipv6="slaac")
        pod = [echo_server(name, socket.AF_INET, ip4), echo_server(name, socket.AF_INET6, ip6)]
        try:
            for ip in (ip4, ip6):
                assert lab.lab.call("n1", talk, ip) == b"hello " + ip.encode()
        finally:
            for server in pod:
                server.close()
        rt.check("again6-1", path)
        rt.delete("again6-1", path)
        assert ip4 not in shim_routes(lab, "-4") and ip6 not in shim_routes(lab, "-6")
        assert pod_link(path) is None and lab.journal("n1") == {}
    finally:
        lab.close()
