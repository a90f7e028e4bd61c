"""Netns tests of the lab builder and janitor: real namespaces, veths, bridges, routes."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from dcnet.lab import janitor
from dcnet.lab.builder import Lab, LabBuildError, LabTerminated, new_prefix, state_path
from dcnet.sysio import netns as netns_mod
from dcnet.sysio import proc

pytestmark = pytest.mark.netns

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
HTTP_PORT = 8080

# h1, h2 -- sw (bridge br0, 10.77.1.0/24) -- r (router) -- h3 (10.77.2.0/24)
THREE_HOSTS = {
    "hosts": [
        {"name": "h1", "sysctls": {"net.ipv4.ip_default_ttl": 33}},
        "h2",
        "h3",
        "sw",
        {"name": "r", "sysctls": {"net.ipv4.ip_forward": 1}},
    ],
    "bridges": [{"name": "br0", "host": "sw"}],
    "links": [
        {"a": {"host": "h1", "ifname": "eth0", "addresses": ["10.77.1.1/24"]},
         "b": {"host": "sw", "ifname": "p-h1", "bridge": "br0"}},
        {"a": {"host": "h2", "ifname": "eth0", "addresses": ["10.77.1.2/24"]},
         "b": {"host": "sw", "ifname": "p-h2", "bridge": "br0"}},
        {"a": {"host": "r", "ifname": "eth0", "addresses": ["10.77.1.254/24"]},
         "b": {"host": "sw", "ifname": "p-r", "bridge": "br0"}},
        {"a": {"host": "r", "ifname": "eth1", "addresses": ["10.77.2.254/24"], "mtu": 1400},
         "b": {"host": "h3", "ifname": "eth0", "addresses": ["10.77.2.3/24"], "mtu": 1400}},
    ],
    "routes": [
        {"host": "h1", "dst": "10.77.2.0/24", "via": "10.77.1.254"},
        {"host": "h2", "dst": "10.77.2.0/24", "via": "10.77.1.254", "dev": "eth0"},
        {"host": "h3", "dst": "default", "via": "10.77.2.254", "metric": 10},
    ],
    "processes": [
        {"name": "web", "host": "h3", "argv": [PYTHON, "-m", "http.server", str(HTTP_PORT)],
         "ready_tcp_port": HTTP_PORT},
    ],
}

SMALL = {
    "hosts": ["a", "b"],
    "links": [{"a": {"host": "a", "ifname": "eth0", "addresses": ["10.78.0.1/24"]},
               "b": {"host": "b", "ifname": "eth0", "addresses": ["10.78.0.2/24"]}}],
}


# ------------------------------------------------------------ helpers run inside a netns


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp_echo(dst: str, timeout: float = 1.0) -> bool:
    """Send one ICMP echo request and wait for the matching reply (raw socket)."""
    ident = os.getpid() & 0xFFFF
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    payload = b"dcnet-lab"
    packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, 1) + payload
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (dst, 0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, _ = sock.recvfrom(2048)
            except TimeoutError:
                return False
            offset = (data[0] & 0x0F) * 4
            kind, _, _, reply_id, _ = struct.unpack("!BBHHH", data[offset:offset + 8])
            if kind == 0 and reply_id == ident:
                return True
    return False


def http_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=3) as response:
        return response.status


def tcp_echo_roundtrip(server_ip: str, port: int) -> bytes:
    with socket.create_connection((server_ip, port), timeout=3) as conn:
        conn.sendall(b"ping\n")
        return conn.recv(100)


def listen_tcp(address: str, port: int) -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, port))
    server.listen()
    return server


def assert_gone(prefix: str, netns_names: list[str]) -> None:
    assert not os.path.exists(state_path(prefix))
    leftovers = [name for name in netns_mod.list_names() if name.startswith(f"{prefix}-")]
    assert leftovers == []
    assert not any(netns_mod.exists(name) for name in netns_names)
    assert not [d for d in os.listdir("/tmp") if d.startswith(f"dcnet-lab-{prefix}-")]


def root_sysctl(key: str) -> str:
    return Path("/proc/sys", *key.split(".")).read_text().strip()


# ------------------------------------------------------------ the shared three-host lab


@pytest.fixture(scope="module")
def lab():
    with Lab(THREE_HOSTS) as built:
        yield built


def test_state_file_records_owner_netns_and_processes(lab: Lab):
    state = json.loads(Path(lab.state_file).read_text())
    assert state["owner_pid"] == os.getpid()
    assert state["owner_start_time"] == proc.start_time(os.getpid())
    assert sorted(state["netns"]) == sorted(lab.netns_names)
    assert [p["name"] for p in state["processes"]] == ["web"]
    assert all(name.startswith(f"{lab.prefix}-") for name in netns_mod.list_names()
               if name in lab.netns_names)


def test_icmp_between_hosts_on_the_bridge(lab: Lab):
    assert lab.call("h1", icmp_echo, lab.address("h2", "eth0"))
    assert lab.call("h2", icmp_echo, lab.address("r", "eth0"))


def test_tcp_between_hosts_on_the_bridge(lab: Lab):
    server = lab.call("h2", listen_tcp, "10.77.1.2", 7000)
    with server:
        client_result = {}

        def serve_once():
            conn, _ = server.accept()
            with conn:
                conn.sendall(conn.recv(100).upper())

        worker = threading.Thread(daemon=True, target=serve_once)
        worker.start()
        client_result["reply"] = lab.call("h1", tcp_echo_roundtrip, "10.77.1.2", 7000)
        worker.join(5)
    assert client_result["reply"] == b"PING\n"


def test_routes_via_the_router(lab: Lab):
    route = lab.run("h1", ["ip", "route", "get", "10.77.2.3"]).stdout
    assert "via 10.77.1.254" in route
    assert lab.call("h1", icmp_echo, "10.77.2.3")
    assert lab.call("h3", icmp_echo, "10.77.1.2")
    assert lab.call("h2", http_status, f"http://10.77.2.3:{HTTP_PORT}/") == 200


def test_forwarding_off_on_router_breaks_the_routed_path(lab: Lab):
    lab.sysctl("r", "net.ipv4.ip_forward", 0)
    try:
        assert not lab.call("h1", icmp_echo, "10.77.2.3", 0.5)
    finally:
        lab.sysctl("r", "net.ipv4.ip_forward", 1)
    assert lab.call("h1", icmp_echo, "10.77.2.3")


def test_sysctl_set_inside_a_host_is_not_visible_outside(lab: Lab):
    assert lab.sysctl("h1", "net.ipv4.ip_default_ttl") == "33"
    assert lab.sysctl("h2", "net.ipv4.ip_default_ttl") != "33"
    assert root_sysctl("net.ipv4.ip_default_ttl") != "33"
    before = root_sysctl("net.ipv4.ip_local_port_range")
    lab.sysctl("h2", "net.ipv4.ip_local_port_range", "40000\t40999")
    assert lab.sysctl("h2", "net.ipv4.ip_local_port_range").split() == ["40000", "40999"]
    assert root_sysctl("net.ipv4.ip_local_port_range") == before


def test_mtu_and_bridge_membership(lab: Lab):
    links = lab.run("h3", ["ip", "-o", "link", "show", "eth0"]).stdout
    assert "mtu 1400" in links
    ports = lab.run("sw", ["ip", "-o", "link", "show", "master", "br0"]).stdout
    for port in ("p-h1", "p-h2", "p-r"):
        assert port in ports
    ipr = lab.iproute("sw")
    assert ipr.link_lookup(ifname="br0")


def test_every_link_has_carrier_when_the_build_returns(lab: Lab):
    """Bridge ports forward from the first frame: the build waited for link-watch to
    report every veth end (and every bridge with ports) operationally up."""
    for end in lab.topology.endpoints():
        state = lab.run(end.host, ["cat", f"/sys/class/net/{end.ifname}/operstate"]).stdout
        assert state.strip() == "up", (end.host, end.ifname, state)
    for bridge in lab.topology.bridges:
        state = lab.run(bridge.host, ["cat", f"/sys/class/net/{bridge.name}/operstate"])
        assert state.stdout.strip() == "up", bridge


def test_a_sigterm_in_a_fork_ends_the_fork_and_leaves_the_lab(lab: Lab):
    """A fork keeps the lab's (and pytest's) SIGTERM handler: pyroute2's IPRoute(netns=)
    forks such a helper. SIGTERM there must end the fork as by default, never raise into
    the lab's teardown from it (that deleted the namespaces under a running test)."""
    pid = os.fork()
    if pid == 0:                              # the fork
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            os._exit(3)                       # reached only if the handler returned/raised
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, status
    assert all(netns_mod.exists(name) for name in lab.netns_names)


def test_pyroute2_netns_helpers_never_run_this_process_sigterm_handler(lab: Lab):
    """``netns.iproute`` forks pyroute2's helper and SIGTERMs it at close: any Python
    SIGTERM handler of this process (the chaos runner's revert, a logger...) must not run
    there (it did in 3 of 30 opens before forks reset SIGTERM to its default)."""
    marker = f"/tmp/dcnet-sigterm-{os.getpid()}"

    def note_pid(*_):
        with open(marker, "a") as handle:
            handle.write(f"{os.getpid()}\n")
    previous = signal.signal(signal.SIGTERM, note_pid)
    try:
        for _ in range(30):
            ipr = netns_mod.iproute(lab.netns_names[0])
            ipr.get_links()
            ipr.close()
        time.sleep(0.5)
        with open(marker, "a+") as handle:
            handle.seek(0)
            pids = handle.read().split()
        assert pids == [], f"the handler ran in forks {pids}"
    finally:
        signal.signal(signal.SIGTERM, previous)
        if os.path.exists(marker):
            os.unlink(marker)


def test_nothing_is_created_in_the_root_namespace(lab: Lab):
    root_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for name in ("br0", "p-h1", "p-h2", "p-r"):
        assert f" {name}:" not in root_links and f" {name}@" not in root_links
    assert not any(netns_mod.is_caller_namespace(name) for name in lab.netns_names)


# ------------------------------------------------------------ process lifecycle


def test_process_serves_tcp_and_is_gone_after_teardown(lab_factory):
    topo = {
        **SMALL,
        "processes": [{"name": "srv", "host": "b",
                       "argv": [PYTHON, "-m", "http.server", "9090", "--bind", "10.78.0.2"],
                       "ready_tcp_port": 9090}],
    }
    lab = lab_factory(topo)
    assert lab.call("a", http_status, "http://10.78.0.2:9090/") == 200
    server = lab.process("srv")
    start = proc.start_time(server.pid)
    extra = lab.start("b", ["sleep", "300"], name="sleeper")
    assert set(netns_mod.pids(lab.netns("b"))) >= {server.pid, extra.pid}
    lab.teardown()
    assert server.poll() is not None and extra.poll() is not None
    assert not proc.is_same_process(server.pid, start)
    assert_gone(lab.prefix, lab.netns_names)


def test_two_hosts_fixture(two_hosts: Lab):
    assert two_hosts.address("h1", "eth0") == "10.250.0.1"
    assert two_hosts.call("h1", icmp_echo, two_hosts.address("h2", "eth0"))


# ------------------------------------------------------------ teardown guarantees


def test_teardown_when_the_body_raises():
    with pytest.raises(RuntimeError, match="boom"), Lab(SMALL) as lab:
        names = lab.netns_names
        assert all(netns_mod.exists(name) for name in names)
        raise RuntimeError("boom")
    assert_gone(lab.prefix, names)


def test_teardown_on_keyboard_interrupt():
    with pytest.raises(KeyboardInterrupt), Lab(SMALL) as lab:
        names = lab.netns_names
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    assert_gone(lab.prefix, names)


@pytest.fixture
def default_sigterm():
    """SIGTERM with its default disposition, as in a plain script (pytest's is restored)."""
    saved = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, saved)


def test_teardown_on_sigterm_and_handler_restored(default_sigterm):
    with pytest.raises(LabTerminated) as info, Lab(SMALL) as lab:
        names = lab.netns_names
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert info.value.code == 128 + signal.SIGTERM
    assert_gone(lab.prefix, names)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_under_pytest_interrupts_like_ctrl_c():
    with pytest.raises(KeyboardInterrupt), Lab(SMALL) as lab:
        names = lab.netns_names
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert_gone(lab.prefix, names)


def test_teardown_is_idempotent():
    lab = Lab(SMALL)
    lab.build()
    lab.teardown()
    lab.teardown()
    assert_gone(lab.prefix, lab.netns_names)


CHILD_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from dcnet.lab.builder import Lab
    from dcnet.sysio import netns, proc
    topo = json.loads(sys.argv[1])
    with Lab(topo) as lab:
        stray = proc.start(["sleep", "300"], netns=lab.netns("b"))  # not recorded by the lab
        netns.wait_entered(lab.netns("b"), stray.pid)  # ip netns exec switches after fork
        print(json.dumps({"prefix": lab.prefix, "netns": lab.netns_names,
                          "sleeper": lab.process("sleeper").pid, "stray": stray.pid}), flush=True)
        time.sleep(300)
""")


def start_child_lab(topology: dict) -> tuple[subprocess.Popen, dict]:
    child = subprocess.Popen(
        [PYTHON, "-c", CHILD_SCRIPT, json.dumps(topology)],
        stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    line = child.stdout.readline()
    assert line, f"child lab failed to start (exit {child.wait(10)})"
    return child, json.loads(line)


def test_sigterm_from_outside_tears_the_lab_down():
    topo = {**SMALL, "processes": [{"name": "sleeper", "host": "b", "argv": ["sleep", "300"]}]}
    child, info = start_child_lab(topo)
    sleeper_start = proc.start_time(info["sleeper"])
    stray_start = proc.start_time(info["stray"])
    child.send_signal(signal.SIGTERM)
    assert child.wait(15) == 128 + signal.SIGTERM
    child.stdout.close()
    assert not proc.is_same_process(info["sleeper"], sleeper_start)
    assert not proc.is_same_process(info["stray"], stray_start)  # every pid in the netns dies
    assert_gone(info["prefix"], info["netns"])


# ------------------------------------------------------------ failed builds


def test_build_failing_halfway_leaves_nothing_behind():
    prefix = new_prefix()
    topo = {**SMALL, "routes": [{"host": "a", "dst": "10.99.0.0/24", "via": "192.0.2.1"}]}
    with pytest.raises(LabBuildError, match=r"add routes\[0\] on a.*unreachable"):
        Lab(topo, prefix=prefix).build()
    assert_gone(prefix, [f"{prefix}-a", f"{prefix}-b"])


def test_process_never_ready_is_stopped_and_build_undone():
    prefix = new_prefix()
    topo = {**SMALL, "processes": [{"name": "mute", "host": "a", "argv": ["sleep", "300"],
                                     "ready_tcp_port": 9999, "ready_timeout": 0.5}]}
    with pytest.raises(LabBuildError, match="not listening on tcp/9999"):
        Lab(topo, prefix=prefix).build()
    assert_gone(prefix, [f"{prefix}-a", f"{prefix}-b"])


def test_process_exiting_early_reports_its_log():
    prefix = new_prefix()
    argv = [PYTHON, "-c", "import sys; print('cannot bind'); sys.exit(3)"]
    topo = {**SMALL, "processes": [{"name": "bad", "host": "a", "argv": argv,
                                     "ready_tcp_port": 9999}]}
    with pytest.raises(LabBuildError, match=r"(?s)exited with 3.*cannot bind"):
        Lab(topo, prefix=prefix).build()
    assert_gone(prefix, [f"{prefix}-a", f"{prefix}-b"])


# ------------------------------------------------------------ janitor


def test_janitor_cleans_a_killed_run_but_not_a_live_one(lab_factory):
    sleeper = {"name": "s", "host": "a", "argv": ["sleep", "300"]}
    live = lab_factory({**SMALL, "processes": [sleeper]})
    live_pid = live.process("s").pid
    topo = {**SMALL, "processes": [{"name": "sleeper", "host": "b", "argv": ["sleep", "300"]}]}
    child, info = start_child_lab(topo)
    sleeper_start = proc.start_time(info["sleeper"])
    stray_start = proc.start_time(info["stray"])
    child.kill()
    child.wait(10)
    child.stdout.close()
    assert all(netns_mod.exists(name) for name in info["netns"])
    assert os.path.exists(state_path(info["prefix"]))

    report = janitor.sweep()

    assert info["prefix"] in report.removed_runs
    assert live.prefix in report.skipped_live_runs
    assert not proc.is_same_process(info["sleeper"], sleeper_start)
    assert not proc.is_same_process(info["stray"], stray_start)
    assert_gone(info["prefix"], info["netns"])
    assert all(netns_mod.exists(name) for name in live.netns_names)
    assert os.path.exists(live.state_file)
    assert live.process("s").poll() is None and live_pid in netns_mod.pids(live.netns("a"))


def test_janitor_removes_stateless_lab_netns_only_after_grace():
    name = f"{new_prefix()}-orphan"
    netns_mod.create(name)
    try:
        assert name not in janitor.sweep(grace_seconds=3600).removed_netns
        assert netns_mod.exists(name)
        assert name in janitor.sweep(grace_seconds=0).removed_netns
        assert not netns_mod.exists(name)
    finally:
        netns_mod.remove(name)


def test_janitor_module_entry_point():
    done = subprocess.run([PYTHON, "-m", "dcnet.lab.janitor"], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_wait_entered_sees_a_child_switch_namespace_and_gives_up_on_an_exited_one(lab_factory):
    lab = lab_factory(SMALL)
    ns = lab.netns("b")
    sleeper = proc.start(["sleep", "30"], netns=ns)
    try:
        assert netns_mod.wait_entered(ns, sleeper.pid)
        assert sleeper.pid in netns_mod.pids(ns)
    finally:
        proc.stop(sleeper, 1.0)
    quick = proc.start(["true"])
    quick.wait()
    assert not netns_mod.wait_entered(ns, quick.pid, timeout=0.2)
