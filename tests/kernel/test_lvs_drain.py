"""``elbctl backend drain`` on real IPVS, in the kernel lab (issue #14): it returns
"safe" only once the drained server's established connections are gone.

The lab of dcnet.lab.lvs_lab (director, carrier clients, three busybox httpd real
servers), NAT service only. A client holds an established connection through the NAT
VIP (a rate-limited download of a large file: it stays ESTABLISHED as long as the
client runs, without any Python process per server). The server it landed on is
drained: weight 0 at once, ``drain_backend`` keeps polling while the connection is
open (several polls, not a duration), new connections from the same client go to the
other servers, and the drain returns "safe" after the client is stopped. Then the
CLI with the applied model's short ``lvs.drain_deadline`` returns "deadline passed"
(exit 4) while such a connection stays open, and ``remove --now`` deletes the server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

import pytest

from dcnet.lab import lvs_lab as lvslab
from dcnet.lab.builder import Lab
from dcnet.lvs import drain
from dcnet.lvs.dynamic import EXIT_DEADLINE, drain_backend, server_counts
from dcnet.lvs.ipvs import KernelIPVS
from dcnet.lvs.store import Store
from dcnet.model import parse_model
from tests.kernel.test_lvs import add_dummies, apply, make_backend

# pyroute2's sockets left to the garbage collector in the guest (see tests/kernel/test_lvs.py)
pytestmark = [pytest.mark.kernel, pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

VIP = lvslab.VIPS["telecom"][0]
DEADLINE = 3                 # the model's lvs.drain_deadline (the CLI case)
BIG = 8 * 1024 * 1024        # bytes of the file the long-lived client downloads
WAIT = 300.0                 # bounds every wait for the lab (emulation is slow)


def model():
    text = lvslab.model_text().replace("lvs: {drain_seconds: 30}",
                                       f"lvs: {{drain_seconds: 30, drain_deadline: {DEADLINE}}}")
    return parse_model(text, source="lvs-drain.yaml", read_text=lvslab.CIDR_FILES.__getitem__)


@pytest.fixture(scope="module")
def lab():
    docroot = tempfile.mkdtemp(prefix="lvs-drain-www-")
    lvslab.write_docroots(docroot)
    for i in range(1, len(lvslab.SERVERS) + 1):
        with open(f"{docroot}/rs{i}/big", "wb") as fh:
            fh.truncate(BIG)
    state_dir = tempfile.mkdtemp(prefix="lvs-drain-state-")
    busybox = shutil.which("busybox") or "/bin/busybox"
    with Lab(lvslab.topology(busybox, docroot)) as lab:
        add_dummies(lab.netns("director"), "elb0")
        _plan, result = apply(make_backend(lab.netns("director"), state_dir), model())
        assert result.ok, result.to_text()
        yield lab, state_dir
    shutil.rmtree(docroot, ignore_errors=True)
    shutil.rmtree(state_dir, ignore_errors=True)


def _layout(state_dir):
    layouts, _ = Store(state_dir).layouts()
    return layouts[lvslab.JOB_NAT]


def _long_client(lab, state_dir: str, name: str):
    """A client download that stays ESTABLISHED; the server it landed on (bounded wait)."""
    client = lab.start("cli-telecom", ["curl", "-s", "-o", "/dev/null", "--limit-rate", "1k",
                                       f"http://{VIP}/big"], name=name)
    ipvs = KernelIPVS(lab.netns("director"))
    try:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            busy = [a for a in lvslab.SERVERS
                    if server_counts(ipvs, _layout(state_dir), a).active > 0]
            if busy:
                assert len(busy) == 1, busy
                return client, busy[0]
            assert client.poll() is None, "the long client ended"
            time.sleep(0.2)
    finally:
        ipvs.close()
    raise AssertionError("no server got the long client's connection")


def _bodies(lab, count: int) -> Counter:
    out = lab.run("cli-telecom", lvslab.curl_loop(f"http://{VIP}/id", count), timeout=600)
    results = lvslab.parse_curl(out.stdout)
    assert [code for code, _ in results] == ["200"] * count, results
    return Counter(body for _, body in results)


def _add_back(lab, state_dir, address):
    from dcnet.lvs.dynamic import change_backend

    ipvs = KernelIPVS(lab.netns("director"))
    try:
        weight = lvslab.WEIGHTS[lvslab.SERVERS.index(address)]
        assert not change_backend(Store(state_dir), ipvs, "add", lvslab.JOB_NAT, address,
                                  weight=weight).errors
    finally:
        ipvs.close()


def test_drain_is_safe_only_after_the_client_closes(lab):
    lab, state_dir = lab
    client, address = _long_client(lab, state_dir, "long-1")
    host = f"rs{lvslab.SERVERS.index(address) + 1}"
    ipvs = KernelIPVS(lab.netns("director"))
    polls, outcome = [], {}
    enough = threading.Event()

    def sleep(seconds):
        polls.append(seconds)
        if len(polls) >= 5:
            enough.set()
        time.sleep(seconds)

    def body():
        outcome["result"] = drain_backend(Store(state_dir), ipvs, "drain", lvslab.JOB_NAT,
                                          address, deadline=3 * WAIT, sleep=sleep)

    key = "net.ipv4.vs.expire_quiescent_template"
    lab.sysctl("director", key, 0)           # (the full apply sets it too): drain sets it
    worker = threading.Thread(target=body, daemon=True)
    worker.start()
    try:
        assert enough.wait(WAIT), "the drain did not start polling"
        assert worker.is_alive() and "result" not in outcome   # still waiting: conn open
        counts = server_counts(ipvs, _layout(state_dir), address)
        assert counts.weight == 0 and counts.active == 1, counts
        assert lab.sysctl("director", key) == "1"
        seen = _bodies(lab, 12)                 # new connections: never the drained one
        assert host not in seen and sum(seen.values()) == 12, seen
        assert worker.is_alive(), "the drain returned while the client was connected"
    finally:
        client.terminate()                      # the client closes its connection
        client.wait(60)
    worker.join(WAIT)
    assert not worker.is_alive(), "the drain did not return after the client closed"
    result = outcome["result"]
    assert result.outcome.state == drain.SAFE and result.exit_code == 0, result.to_text()
    assert "safe: " in result.to_text()
    ipvs.close()
    _add_back(lab, state_dir, address)


def test_cli_drain_says_deadline_passed_then_remove_now(lab):
    lab, state_dir = lab
    client, address = _long_client(lab, state_dir, "long-2")
    elbctl = [sys.executable, "-m", "dcnet.cli.elbctl", "backend"]
    where = ["--lvs-netns", lab.netns("director"), "--lvs-state-dir", state_dir]
    try:
        run = subprocess.run([*elbctl, "drain", lvslab.JOB_NAT, address, *where],
                             capture_output=True, text=True, timeout=900)
        assert run.returncode == EXIT_DEADLINE, run.stdout + run.stderr
        assert "deadline passed after" in run.stdout and "1 active connection" in run.stdout
        assert client.poll() is None            # the connection was not cut by the drain
        run = subprocess.run([*elbctl, "remove", lvslab.JOB_NAT, address, "--now", *where],
                             capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "with 1 active connection(s)" in run.stdout, run.stdout
        ipvs = KernelIPVS(lab.netns("director"))
        assert server_counts(ipvs, _layout(state_dir), address).dests == 0
        ipvs.close()
    finally:
        client.terminate()
        client.wait(60)
    _add_back(lab, state_dir, address)
    assert os.path.exists(os.path.join(state_dir, "settings.json"))
