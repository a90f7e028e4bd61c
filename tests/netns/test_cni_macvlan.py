"""Netns tests of the dcnet CNI plugin in macvlan mode with DHCP leases held by dcnet-agent.

A real DHCP server (dnsmasq; Kea where a lease must expire quickly) in a namespace on the
underlay, node namespaces running ``dcnet-agent``, pods made through the installed binary
the way libcni runs it. The server's lease file is the witness: a renewal moves a lease's
expiry, a release removes the lease.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from dcnet.cni.leases import client_id
from dcnet.cni.version import SUPPORTED
from dcnet.lab.builder import Lab
from dcnet.lab.cni_dhcp import (
    NET,
    ROUTER,
    DhcpLab,
    pod_ip,
    pod_link,
    pod_state,
    topology,
    wait_until,
)
from dcnet.lab.cni_invoke import PluginError, exec_plugin
from dcnet.sysio import netns

pytestmark = pytest.mark.netns

POD_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={}"
FIXED_POD, FIXED_IP = "web-fixed", f"{NET}.42"


def client_id_hex(pod: str) -> str:
    """Option 61 as the server sees it: type 0, then dcnet's pod identity."""
    value = b"\0" + client_id("pod", "default", pod, "eth0", "unused")
    return ":".join(f"{b:02x}" for b in value)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """n1 (host shim on) and n2 (no shim) with agents; dnsmasq with T1 6 s, T2 10 s."""
    if os.geteuid() != 0:
        pytest.skip("netns test: needs root")
    root = tmp_path_factory.mktemp("dcnet-macvlan")
    with Lab(topology()) as lab:
        made = DhcpLab(lab, root)
        try:
            made.start_dnsmasq(extra=(f"--dhcp-host=id:{client_id_hex(FIXED_POD)},{FIXED_IP}",))
            made.start_agent("n1", hostShim=True)
            made.start_agent("n2")
            yield made
        finally:
            made.close()


@pytest.fixture
def private(lab_factory, tmp_path):
    """A lab of one's own, for tests that stop the server or the agent."""
    made = DhcpLab(lab_factory(topology(("n1",))), tmp_path, nodes=("n1",))
    yield made
    made.close()


def address(result: dict) -> str:
    return result["ips"][-1]["address"].split("/")[0]


def add(lab: DhcpLab, node: str, cid: str, path: str, pod: str | None = None, **extra):
    return lab.runtime(node, **extra).add(cid, path, args=POD_ARGS.format(pod or cid))


# ---------------------------------------------------------------- acquisition and release


def test_twenty_pods_at_once_get_leases_and_release_them(shared):
    runtime = shared.runtime("n2")
    paths = [shared.pod(f"burst{i}") for i in range(20)]
    with ThreadPoolExecutor(max_workers=20) as workers:
        results = list(workers.map(
            lambda item: runtime.add(f"burst-{item[0]}", item[1],
                                     args=POD_ARGS.format(f"burst-{item[0]}")),
            enumerate(paths)))
    addresses = [address(r) for r in results]
    assert len(set(addresses)) == 20
    leases = shared.server_leases()
    for index, (path, result) in enumerate(zip(paths, results, strict=True)):
        ip = address(result)
        assert ip.startswith(f"{NET}.1")
        assert leases[ip]["hostname"] == f"burst-{index}"  # the hostname option
        assert leases[ip]["mac"] == result["interfaces"][0]["mac"]
        assert pod_ip(path) == [result["ips"][0]["address"]]
        assert result["ips"][0]["gateway"] == ROUTER
        assert f"default via {ROUTER} dev eth0" in pod_state(path)
        link = pod_link(path)
        assert link["linkinfo"]["info_kind"] == "macvlan"
        assert link["linkinfo"]["info_data"]["mode"] == "bridge"
        assert netns.sysctl_get(path.rsplit("/", 1)[1],
                                "net.ipv4.conf.eth0.arp_notify") == "1"
    assert len(shared.journal("n2")) == 20
    with ThreadPoolExecutor(max_workers=20) as workers:
        list(workers.map(lambda item: runtime.delete(f"burst-{item[0]}", item[1]),
                         enumerate(paths)))
    # DHCPRELEASE is one UDP datagram the server handles after DEL returned: wait for
    # every address to leave the server's lease file (a lost release fails the wait)
    wait_until(lambda: not set(addresses) & set(shared.server_leases()),
               "every release reaching the server")
    assert shared.journal("n2") == {}
    assert all(pod_link(p) is None for p in paths)


def test_stable_client_id_keeps_a_reservation_across_pod_incarnations(shared):
    """clientID "pod": the identity is namespace/name/ifname, not the MAC or container,
    so a server reservation for the pod holds for every incarnation of it."""
    first_path = shared.pod("again1")
    first = add(shared, "n2", "again-a", first_path, pod=FIXED_POD)
    shared.runtime("n2").delete("again-a", first_path)
    second_path = shared.pod("again2")
    second = add(shared, "n2", "again-b", second_path, pod=FIXED_POD)
    assert address(first) == address(second) == FIXED_IP
    assert second["interfaces"][0]["mac"] != first["interfaces"][0]["mac"]
    shared.runtime("n2").delete("again-b", second_path)


@pytest.mark.parametrize("version", SUPPORTED)
def test_every_spec_version_add_check_del(shared, version):
    runtime = shared.runtime("n2", version)
    path = shared.pod(f"v{version.replace('.', '')}")
    cid = f"ver-{version}"
    result = runtime.add(cid, path, args=POD_ARGS.format(cid.replace(".", "-")))
    assert result["cniVersion"] == version
    assert ("version" in result["ips"][0]) == version.startswith("0.")
    assert result["dns"]["nameservers"] == [f"{NET}.250"]
    if version in ("0.3.0", "0.3.1"):
        with pytest.raises(PluginError) as caught:
            runtime.check(cid, path)
        assert caught.value.code == 1
    else:
        runtime.check(cid, path)
    runtime.delete(cid, path)
    runtime.delete(cid, path)  # DEL is repeatable
    wait_until(lambda: address(result) not in shared.server_leases(), "the release")
    assert pod_link(path) is None


# ---------------------------------------------------------------- renewals and restarts


def test_renewal_and_agent_killed_mid_lease(shared):
    """T1 renewals move the lease's expiry in the server's file; after SIGKILL and a
    restart the agent resumes the journaled lease and keeps renewing it."""
    path = shared.pod("renew")
    runtime = shared.runtime("n1")
    result = runtime.add("renew-1", path, args=POD_ARGS.format("renew-1"))
    ip = address(result)
    first = shared.server_leases()[ip]["expiry"]

    def expiry() -> float:  # dnsmasq rewrites its lease file in place: a read may miss it
        return shared.server_leases().get(ip, {}).get("expiry", 0)
    wait_until(lambda: expiry() > first, "a renewal", 30)
    shared.stop_agent("n1", kill=True)
    assert pod_ip(path) == [result["ips"][0]["address"]]  # pods keep their address
    before = wait_until(expiry, "the lease in the server's file")
    shared.start_agent("n1", hostShim=True)
    wait_until(lambda: expiry() > before, "a renewal by the restarted agent", 30)
    assert "renew-1+eth0: resumed" in shared.agent_log("n1")
    assert pod_ip(path) == [result["ips"][0]["address"]]
    runtime.check("renew-1", path)
    runtime.delete("renew-1", path)
    wait_until(lambda: ip not in shared.server_leases(), "the release reaching the server")


def test_del_while_the_agent_is_down_queues_the_release(private):
    private.start_dnsmasq()
    private.start_agent("n1")
    path = private.pod("queued")
    runtime = private.runtime("n1")
    ip = address(runtime.add("queued-1", path, args=POD_ARGS.format("queued")))
    private.stop_agent("n1")  # SIGTERM: the lease stays (journaled, not released)
    assert ip in private.server_leases()
    runtime.delete("queued-1", path)  # succeeds without the agent
    assert pod_link(path) is None  # the link is gone at once
    assert [p.name for p in private.queue_dir("n1").iterdir()] == ["queued-1+eth0.json"]
    assert ip in private.server_leases()  # not released yet
    private.start_agent("n1")
    wait_until(lambda: ip not in private.server_leases(), "the queued release", 15)
    wait_until(lambda: not list(private.queue_dir("n1").iterdir()), "the queue to empty", 5)
    assert "over temporary dcnr" in private.agent_log("n1")
    assert private.journal("n1") == {}


def test_pod_netns_gone_without_del_is_released_and_dropped(private):
    private.start_dnsmasq()
    private.start_agent("n1")
    path = private.pod("vanish")
    ip = address(private.runtime("n1").add("vanish-1", path, args=POD_ARGS.format("v")))
    private.stop_agent("n1", kill=True)
    private.remove_pod(path)  # the runtime lost the pod and never called DEL
    private.start_agent("n1")
    wait_until(lambda: ip not in private.server_leases(), "the release of a gone pod", 15)
    wait_until(lambda: private.journal("n1") == {}, "the record to be dropped", 5)
    assert "is gone: releasing and dropping" in private.agent_log("n1")


def test_server_down_across_renewal_then_a_new_address_on_rebinding(private):
    """No answer at T1 or T2: the pod keeps its address. The server comes back with
    another range and refuses the old address: the pod moves to the new one."""
    private.start_dnsmasq(first=100, last=149, t1=3, t2=5)
    private.start_agent("n1")
    path = private.pod("rebind")
    old = address(private.runtime("n1").add("rebind-1", path, args=POD_ARGS.format("rb")))
    private.stop_server()
    obtained = private.journal("n1")["rebind-1+eth0"]["lease"]["obtained"]
    wait_until(lambda: time.time() > obtained + 6, "T1 and T2 to pass unanswered", 20)
    assert pod_ip(path) == [f"{old}/24"]  # still there: the lease has not expired
    private.start_dnsmasq(first=150, last=199, t1=3, t2=5, fresh=True)
    try:
        moved = wait_until(lambda: [a for a in pod_ip(path) if a != f"{old}/24"],
                           "the pod's new address", 60, step=0.2)
    except AssertionError:
        raise AssertionError(private.agent_log("n1") + private.server_log()) from None
    new = moved[0].split("/")[0]
    assert 150 <= int(new.rsplit(".", 1)[1]) <= 199
    wait_until(lambda: pod_ip(path) == [f"{new}/24"], "the old address to go", 15)
    assert f"default via {ROUTER} dev eth0" in pod_state(path)
    assert "address changed from" in private.agent_log("n1")
    record = private.journal("n1")["rebind-1+eth0"]
    assert record["configured"]["address"] == f"{new}/24"
    private.runtime("n1").delete("rebind-1", path)


def test_lease_expiry_sets_the_link_down(private):
    private.start_kea(valid=8, renew=3, rebind=5)
    private.start_agent("n1")
    path = private.pod("expire")
    runtime = private.runtime("n1")
    result = runtime.add("expire-1", path, args=POD_ARGS.format("expire"))
    assert pod_ip(path) == [result["ips"][0]["address"]]
    private.stop_server()
    wait_until(lambda: "UP" not in pod_link(path)["flags"], "the link to go down", 30,
               step=0.2)
    # the agent sets the link down first, then removes the address, journals and logs
    wait_until(lambda: "expired without a renewal" in private.agent_log("n1"),
               "the expiry to be logged", 15)
    assert pod_ip(path) == []
    assert private.journal("n1")["expire-1+eth0"]["state"] == "expired"
    with pytest.raises(PluginError) as caught:
        runtime.check("expire-1", path)
    assert caught.value.code == 103 and "expired" in caught.value.msg
    runtime.delete("expire-1", path)
    assert pod_link(path) is None and private.journal("n1") == {}


# ---------------------------------------------------------------- host shim


def _echo_server(path: str, ip: str) -> socket.socket:
    def listen() -> socket.socket:
        sock = socket.socket()
        sock.bind((ip, 7000))
        sock.listen(4)
        return sock
    sock = netns.run_in(path.rsplit("/", 1)[1], listen)

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


def _talk(ip: str) -> bytes:
    try:
        with socket.create_connection((ip, 7000), timeout=2) as conn:
            conn.sendall(b"health check")
            return conn.recv(64)
    except OSError as exc:
        return f"error: {exc}".encode()


def test_host_shim_lets_the_node_reach_its_pods(shared):
    shim_path, plain_path = shared.pod("shimmed"), shared.pod("plain")
    shimmed = address(add(shared, "n1", "shim-1", shim_path))
    plain = address(add(shared, "n2", "plain-1", plain_path))
    servers = [_echo_server(shim_path, shimmed), _echo_server(plain_path, plain)]
    try:
        assert shared.lab.call("n1", _talk, shimmed) == b"health check"
        routes = shared.lab.run("n1", ["ip", "route", "show", "dev", "dcnshim0"]).stdout
        assert f"{shimmed} proto 217" in routes
        # without a shim (n2) the node cannot reach its own macvlan pod: the pain point
        assert shared.lab.call("n2", _talk, plain).startswith(b"error")
    finally:
        for server in servers:
            server.close()
    shared.runtime("n1").delete("shim-1", shim_path)
    shared.runtime("n2").delete("plain-1", plain_path)
    routes = shared.lab.run("n1", ["ip", "route", "show", "dev", "dcnshim0"]).stdout
    assert shimmed not in routes


# ---------------------------------------------------------------- CHECK and STATUS


def test_check_has_no_side_effects_and_detects_drift(shared):
    runtime = shared.runtime("n2")
    path = shared.pod("check")
    ip = address(runtime.add("chk-1", path, args=POD_ARGS.format("chk-1")))

    def snapshot():
        leases = {a: v["mac"] for a, v in shared.server_leases().items()}
        record = dict(shared.journal("n2")["chk-1+eth0"])
        for volatile in ("lease", "updated"):  # renewals every few seconds
            record.pop(volatile)
        return leases, record, pod_state(path)
    before = snapshot()
    for _ in range(3):
        runtime.check("chk-1", path)
    assert snapshot() == before
    netns.run_in(path.rsplit("/", 1)[1], subprocess.run,
                 ["ip", "addr", "del", f"{ip}/24", "dev", "eth0"], check=True)
    drifted = pod_state(path)
    with pytest.raises(PluginError) as caught:
        runtime.check("chk-1", path)
    assert caught.value.code == 103 and "lacks" in caught.value.msg
    assert pod_state(path) == drifted
    runtime.delete("chk-1", path)


def test_status_follows_agent_and_master(shared, private):
    shared.runtime("n2").status()
    with pytest.raises(PluginError) as caught:
        shared.runtime("n2", master="eth9").status()
    assert caught.value.code == 50 and "master eth9 does not exist" in caught.value.msg
    private.start_dnsmasq()
    with pytest.raises(PluginError) as caught:  # no agent ever started there
        private.runtime("n1").status()
    assert caught.value.code == 50 and "unreachable" in caught.value.msg
    private.start_agent("n1")
    private.runtime("n1").status()
    private.stop_agent("n1")
    with pytest.raises(PluginError) as caught:
        private.runtime("n1").status()
    assert caught.value.code == 50


# ---------------------------------------------------------------- bad input


def raw_add(lab: DhcpLab, node: str, path: str, cid: str, **extra) -> tuple[int, dict]:
    runtime = lab.runtime(node, **extra)
    conf = runtime.plugin_conf(runtime.conflist["plugins"][0], None, None)
    done = exec_plugin(os.path.join(lab.bin_dir, "dcnet"),
                       runtime.env("ADD", cid, path, "eth0", POD_ARGS.format(cid)),
                       json.dumps(conf), lab.lab.netns(node))
    assert done.stdout.strip(), f"no JSON on stdout (exit {done.rc}): {done.stderr}"
    return done.rc, json.loads(done.stdout)


@pytest.mark.parametrize(("case", "extra", "code", "words"), [
    ("master-missing", {"master": "eth9"}, 11, "master eth9 does not exist"),
    ("mode-unknown", {"macvlanMode": "source"}, 7, "macvlanMode"),
    ("mtu-too-large", {"mtu": 9000}, 7, "exceeds the MTU 1500 of master eth0"),
    ("agent-unreachable", {"agentSocket": "/run/dcnet-no-such-agent.sock"}, 11,
     "unreachable"),
])
def test_bad_input_gets_its_code_and_leaves_nothing(shared, case, extra, code, words):
    path = shared.pod(f"bad-{case}")
    before = (pod_state(path), shared.journal("n2"), set(shared.server_leases()),
              shared.lab.run("n2", ["ip", "-br", "link"]).stdout)
    rc, out = raw_add(shared, "n2", path, f"bad-{case}", **extra)
    assert rc == 1 and out["code"] == code and words in out["msg"], out
    after = (pod_state(path), shared.journal("n2"), set(shared.server_leases()),
             shared.lab.run("n2", ["ip", "-br", "link"]).stdout)
    assert after == before


def test_no_dhcp_answer_fails_add_and_leaves_nothing(private):
    private.start_agent("n1")  # no DHCP server at all
    path = private.pod("silent")
    before = pod_state(path)
    rc, out = raw_add(private, "n1", path, "silent-1", dhcp={"clientID": "pod", "timeout": 3})
    assert rc == 1 and out["code"] == 11 and "no DHCP lease within 3s" in out["msg"], out
    assert pod_state(path) == before
    assert private.journal("n1") == {}


def test_interface_already_in_the_pod(shared):
    path = shared.pod("taken")
    netns.run_in(path.rsplit("/", 1)[1], subprocess.run,
                 ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"],
                 check=True)
    rc, out = raw_add(shared, "n2", path, "taken-1")
    assert rc == 1 and out["code"] == 102 and "already exists" in out["msg"]
    shared.runtime("n2").delete("taken-1", path)  # DEL after a failed ADD succeeds ...
    assert pod_link(path)["linkinfo"]["info_kind"] == "veth"  # ... and spares the veth
