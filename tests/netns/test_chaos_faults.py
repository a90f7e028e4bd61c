"""Link and traffic-control chaos faults on a real veth pair (h1 and h2 of ``two_hosts``):
link-down and link-flap and their revert, a tbf rate limit measured as a throughput drop,
stacked faults on one interface combined into one tree (revert of one leaves the other),
a delay refused with the missing module named where the kernel has no netem, and a
SIGKILLed runner whose held rate limit and downed link are reverted by ``chaos
recover``."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from click.testing import CliRunner

from dcnet.chaos import faults, linkfaults, qdisc
from dcnet.chaos.experiment import Step
from dcnet.chaos.journal import Journal
from dcnet.cli.elbctl import cli
from dcnet.lab import kernel_lab

pytestmark = pytest.mark.netns

H2 = "10.250.0.2"


@pytest.fixture
def workdir(monkeypatch):
    path = tempfile.mkdtemp(prefix="dcnet-chaosf-")
    monkeypatch.setenv(qdisc.ENV_DIR, f"{path}/qdisc")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def step(kind: str, ns: str, **values) -> Step:
    return Step(kind, values.pop("duration", 1.0), ns, interface="eth0", **values)


def pings(lab, host: str, address: str) -> bool:
    return lab.run(host, ["ping", "-c1", "-W1", address], check=False).returncode == 0


def wait_until(predicate, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_link_down_then_revert_sets_it_up(two_hosts):
    ns = two_hosts.netns("h1")
    wait_until(lambda: pings(two_hosts, "h1", H2), "ping before the fault")
    record = faults.prepare(step("link-down", ns), "t", 0)
    faults.apply(record)
    assert not linkfaults.is_up(ns, "eth0")
    assert not pings(two_hosts, "h1", H2)
    assert "set up" in faults.revert(record)
    assert linkfaults.is_up(ns, "eth0")
    wait_until(lambda: pings(two_hosts, "h1", H2), "ping after the link is up")
    faults.revert(record)                                    # idempotent
    linkfaults.set_state(ns, "eth0", "down")                 # down before the fault:
    record = faults.prepare(step("link-down", ns), "t", 1)
    faults.apply(record)
    assert "left as it is" in faults.revert(record)          # stays down
    assert not linkfaults.is_up(ns, "eth0")


def test_link_flap_goes_down_and_up_until_reverted(two_hosts):
    ns = two_hosts.netns("h1")
    record = faults.prepare(step("link-flap", ns, period=0.2, count=0), "t", 0)
    faults.apply(record)
    try:
        for state in (False, True, False, True):            # seen both ways, twice
            wait_until(lambda s=state: linkfaults.is_up(ns, "eth0") == s, f"up={state}")
    finally:
        faults.revert(record)
    assert linkfaults.is_up(ns, "eth0")
    time.sleep(0.3)                                          # the flapper is gone for good
    assert linkfaults.is_up(ns, "eth0")


def test_link_fault_on_a_missing_interface_is_refused_before_the_journal(two_hosts):
    with pytest.raises(faults.FaultError, match="no interface 'nope0'"):
        faults.prepare(Step("link-down", 1.0, two_hosts.netns("h1"), interface="nope0"),
                       "t", 0)


def throughput_bps(lab, seconds: float = 1.5) -> float:
    """Bits per second h2 receives from h1 over one TCP connection, pushed for
    ``seconds`` (measured by the receiver: first to last byte)."""
    got = {"bytes": 0, "first": 0.0, "last": 0.0}
    ready = threading.Event()

    def serve() -> None:
        with socket.create_server((H2, 5201)) as server:
            server.settimeout(20)
            ready.set()
            conn, _ = server.accept()
            with conn:
                conn.settimeout(10)
                while chunk := conn.recv(65536):
                    got["last"] = time.monotonic()
                    got["first"] = got["first"] or got["last"]
                    got["bytes"] += len(chunk)

    def send() -> None:
        with socket.create_connection((H2, 5201), 5) as conn:
            conn.settimeout(10)
            payload, start = b"x" * 65536, time.monotonic()
            while time.monotonic() - start < seconds:
                conn.sendall(payload)

    server = threading.Thread(target=lab.call, args=("h2", serve), daemon=True)
    server.start()
    assert ready.wait(20)
    lab.call("h1", send)
    server.join(60)
    assert not server.is_alive() and got["last"] > got["first"]
    return got["bytes"] * 8 / (got["last"] - got["first"])


def test_rate_limit_drops_the_measured_throughput(two_hosts, workdir):
    ns = two_hosts.netns("h1")
    free = throughput_bps(two_hosts)
    record = faults.prepare(step("rate", ns, rate_bps=2_000_000, burst=16000,
                                 latency_ms=50), "t", 0)
    faults.apply(record)
    try:
        assert qdisc.tree(ns, "eth0") == [("tbf", "1:0", "root")]
        limited = throughput_bps(two_hosts)
    finally:
        faults.revert(record)
    print(f"figures: free {free / 1e6:.1f} Mbit/s, tbf 2mbit {limited / 1e6:.2f} Mbit/s")
    # bytes still in flight when the sender stops (tbf's queue, socket buffers) count
    assert limited < 4_000_000 < free / 5
    assert qdisc.root_kind(ns, "eth0") in qdisc.DEFAULT_ROOTS
    assert not os.path.exists(qdisc.stack_path(ns, "eth0"))


def reaches(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), 0.5):
            return True
    except OSError:
        return False


def tc_show(lab, host: str) -> str:
    return lab.run(host, ["tc", "qdisc", "show", "dev", "eth0"]).stdout


def test_stacked_rate_faults_combine_and_revert_of_one_leaves_the_other(two_hosts, workdir):
    ns = two_hosts.netns("h1")
    wide = faults.prepare(step("rate", ns, rate_bps=10_000_000), "t", 0)
    narrow = faults.prepare(step("rate", ns, rate_bps=1_000_000), "t", 1)
    faults.apply(wide)
    assert "rate 10Mbit" in tc_show(two_hosts, "h1")
    faults.apply(narrow)                                     # combined: the narrower wins
    shown = tc_show(two_hosts, "h1")
    assert "rate 1Mbit" in shown and shown.count("qdisc tbf") == 1
    assert [f["key"] for f in qdisc.read_stack(ns, "eth0")] == [wide["key"], narrow["key"]]
    faults.revert(narrow)                                    # the other one stays
    assert "rate 10Mbit" in tc_show(two_hosts, "h1")
    faults.revert(wide)
    assert "tbf" not in tc_show(two_hosts, "h1")
    assert qdisc.read_stack(ns, "eth0") == []


def test_a_foreign_root_qdisc_is_not_replaced(two_hosts, workdir):
    two_hosts.run("h1", ["tc", "qdisc", "add", "dev", "eth0", "root", "handle", "5:", "htb"])
    record = faults.prepare(step("rate", two_hosts.netns("h1"), rate_bps=1_000_000), "t", 0)
    with pytest.raises(faults.FaultError, match="root qdisc 'htb' that chaos did not make"):
        faults.apply(record)
    assert "not in place" in faults.revert(record)          # as recover would after it
    assert "qdisc htb 5:" in tc_show(two_hosts, "h1")


@pytest.mark.skipif(kernel_lab.host_has_modules(["sch_netem"]), reason="host has netem")
def test_delay_without_netem_names_the_fault_and_the_module(two_hosts):
    with pytest.raises(faults.FaultError, match=r"fault delay on eth0 .*sch_netem"):
        faults.prepare(step("delay", two_hosts.netns("h1"), delay_ms=50), "t", 0)


EXPERIMENT = """\
chaos: 1
name: stacked-link
namespaces: [{h1}, {h2}]
steady_seconds: 0.5
probes:
  - {{name: web, namespace: {h1}, url: "http://{h2addr}:8080/", timeout: 1}}
method:
  - {{fault: rate, namespace: {h1}, interface: eth0, rate: 5mbit, hold: true, duration: 0}}
  - {{fault: link-down, namespace: {h2}, interface: eth0, duration: 600}}
"""


def test_sigkilled_runner_held_rate_and_downed_link_reverted_by_recover(two_hosts, workdir):
    h1, h2 = two_hosts.netns("h1"), two_hosts.netns("h2")
    two_hosts.start("h2", [sys.executable, "-m", "http.server", "--bind", H2, "8080"],
                    name="web")
    wait_until(lambda: two_hosts.call("h1", reaches, H2, 8080), "the web server")
    path, journal = f"{workdir}/e.yaml", f"{workdir}/journal.jsonl"
    with open(path, "w") as handle:
        handle.write(EXPERIMENT.format(h1=h1, h2=h2, h2addr=H2))
    env = dict(os.environ, **{qdisc.ENV_DIR: f"{workdir}/qdisc"})
    runner = subprocess.Popen([sys.executable, "-m", "dcnet.cli.elbctl", "chaos", "run", path,
                               "--journal", journal], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while linkfaults.is_up(h2, "eth0"):
            if runner.poll() is not None or time.monotonic() > deadline:
                runner.kill()
                pytest.fail(f"no link-down injected: {runner.communicate()[0]}")
            time.sleep(0.05)
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.communicate()
    assert "rate 5Mbit" in tc_show(two_hosts, "h1")          # both survive the runner
    assert not linkfaults.is_up(h2, "eth0")
    kinds = sorted(f["kind"] for _, f in Journal(journal).pending())
    assert kinds == ["link-down", "rate"]
    result = CliRunner(env={qdisc.ENV_DIR: f"{workdir}/qdisc"}).invoke(
        cli, ["chaos", "recover", "--journal", journal])
    assert result.exit_code == 0, result.output
    assert "tbf" not in tc_show(two_hosts, "h1")
    assert linkfaults.is_up(h2, "eth0")
    assert not os.path.exists(journal)
    wait_until(lambda: pings(two_hosts, "h1", H2), "ping after recover")


def test_dhcp_churn_makes_the_server_forget_the_named_lease(two_hosts, workdir):
    """dnsmasq in h2 leases an address to udhcpc in h1 (host name churnpod); the fault
    releases it on the client's behalf: dnsmasq drops it from its lease file."""
    leasefile = f"{workdir}/dnsmasq.leases"
    two_hosts.start("h2", ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
                           "--interface=eth0", "--bind-interfaces", "--user=root",
                           f"--pid-file={workdir}/dnsmasq.pid", "--log-facility=-",
                           "--log-dhcp", "--dhcp-authoritative", "--no-ping",
                           "--dhcp-range=10.250.0.100,10.250.0.150,2m",
                           f"--dhcp-leasefile={leasefile}"], name="dnsmasq")
    wait_until(lambda: os.path.exists(leasefile), "dnsmasq's lease file")
    two_hosts.run("h1", ["busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "10",
                         "-T", "1", "-s", "/bin/true", "-x", "hostname:churnpod"])
    from dcnet.chaos import dhcpchurn
    [lease] = dhcpchurn.leases(leasefile)
    assert lease["hostname"] == "churnpod"
    record = faults.prepare(Step("dhcp-churn", 1.0, two_hosts.netns("h2"), interface="eth0",
                                 leasefile=leasefile, server=H2, clients="^churnpod$",
                                 period=0), "t", 0)
    faults.apply(record)
    assert record["released"] == [lease["address"]]
    wait_until(lambda: dhcpchurn.leases(leasefile) == [], "dnsmasq to drop the lease")
    assert "stopped" in faults.revert(record)
