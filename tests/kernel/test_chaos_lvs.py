"""Shipped chaos experiments on real IPVS and keepalived, in the kernel lab (this host has
neither IPVS nor netem), through the runner in-process (no ``elbctl`` process: each
costs seconds under emulation), on ONE LVS lab (dcnet.lab.lvs_lab) with keepalived on
the director started on dcnet's rendered configuration (HTTP checks every 1 s, 2
retries 1 s apart, inhibit_on_failure):

- ``lvs-real-server-killed``: rs1's busybox httpd SIGKILLed under load through the NAT
  VIP (the lab's NAT service only);
  requests fail until keepalived's check sets rs1's weight to 0 (a thread watches the
  weight in /proc/net/ip_vs and rs1's process), none after; keepalived gives the weight
  back once the rollback started the server again; nothing left over.
- ``lvs-path-delay``: a 100 ms netem delay on the client's link, measured back by the
  runner's tcp probe (connect latency during less before) within a generous bound
  (emulated timers are late, never early); the 5% figure is reported in
  docs/chaos.md, not asserted (emulation).

Waits are bounded readiness waits; no duration is asserted.
"""

from __future__ import annotations

import http.client
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from dcnet.chaos import experiment as exp
from dcnet.chaos import runner
from dcnet.chaos.journal import Journal
from dcnet.lab import lvs_lab as lvslab
from dcnet.lab.builder import Lab
from dcnet.lvs import procfs
from dcnet.lvs.keepalived import render
from dcnet.model import parse_model
from dcnet.sysio import netns

# pyroute2's sockets left to the garbage collector in the guest (see tests/kernel/test_lvs.py)
pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

VIP = lvslab.VIPS["unicom"][0]
RS1 = lvslab.SERVERS[0]
WEIGHTS = dict(zip(lvslab.SERVERS, lvslab.WEIGHTS, strict=True))
WAIT = 300.0                 # bounds every wait for the lab (emulation is slow)


def model():
    """The lab's NAT service only (nothing checks or calls port 8081), fast checks."""
    text = lvslab.model_text("http").replace(
        "health_check: {type: http, path: /id}",
        "health_check: {type: http, path: /id, interval: 1, timeout: 1, fall: 2}")
    text = text[:text.index(f"  - job: {lvslab.JOB_DR}")]
    return parse_model(text, source="chaos-lvs.yaml", read_text=lvslab.CIDR_FILES.__getitem__)



def weights(director: str) -> dict[str, int]:
    """The weights of the NAT VIP's dests in the director's IPVS table."""
    table = procfs.parse(procfs.read_in(netns.path_of(director)))
    return {row[1]: row[4] for row in table.get((6, VIP, lvslab.NAT_PORT), [])}


def get(url_host: str, port: int, path: str) -> bool:
    conn = http.client.HTTPConnection(url_host, port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def wait_until(check, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"not within {WAIT:g}s: {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def lvs():
    from pyroute2 import config

    # pyroute2's netns.create waits 2 s for the helper it forks: in the guest the lab
    # build failed twice in a row on it ("no response from the child"); set back after
    default_timeout, config.default_communicate_timeout = config.default_communicate_timeout, 30
    try:
        yield from _lvs_lab()
    finally:
        config.default_communicate_timeout = default_timeout


def _lvs_lab():
    docroot = tempfile.mkdtemp(prefix="chaos-lvs-www-")
    run_dir = tempfile.mkdtemp(prefix="chaos-lvs-ka-")
    lvslab.write_docroots(docroot)
    busybox = shutil.which("busybox") or "/bin/busybox"
    with Lab(lvslab.topology(busybox, docroot)) as lab:
        conf = f"{run_dir}/keepalived.conf"
        with open(conf, "w") as handle:
            handle.write(render(model()))
        lab.start("director", ["keepalived", "-n", "-l", "-D", "-f", conf,
                               "-p", f"{run_dir}/k.pid", "-r", f"{run_dir}/v.pid",
                               "-c", f"{run_dir}/c.pid"],
                  name="keepalived", log_path=f"{run_dir}/keepalived.log")
        director = lab.netns("director")
        wait_until(lambda: weights(director) == WEIGHTS, "keepalived programs the VIP")
        row = [0]

        def serving() -> bool:
            row[0] = row[0] + 1 if lab.call("cli-unicom", get, VIP, 80, "/id") else 0
            return row[0] >= 10
        wait_until(serving, "the VIP answers 10 requests in a row (VRRP master)")
        yield lab, busybox, docroot, run_dir
    shutil.rmtree(docroot, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)


class Watcher(threading.Thread):
    """Polls rs1's weight and its httpd every 0.1 s: when it died, when keepalived set
    the weight to 0 and when it gave it back (monotonic seconds)."""

    def __init__(self, lab):
        super().__init__(daemon=True)
        self.director, self.httpd = lab.netns("director"), lab.process("rs1-http-8080")
        self.died = self.zero = self.back = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            now, weight = time.monotonic(), weights(self.director).get(RS1)
            if self.died is None and self.httpd.poll() is not None:
                self.died = now
            if self.died is not None and self.zero is None and weight == 0:
                self.zero = now
            if self.zero is not None and self.back is None and weight == WEIGHTS[RS1]:
                self.back = now
            self.done.wait(0.1)


def run(name: str, tmp_path, **variables) -> dict:
    loaded = exp.load(exp.builtin(name), variables)
    result = runner.run(loaded, Journal(str(tmp_path / "journal.jsonl")),
                        out=str(tmp_path / "result.json"))
    step = result["steps"][0]
    print(f"figures {name}:", json.dumps({
        "probes": {p: {k: v[k] for k in ("during", "after", "time_to_first_failure",
                                          "time_to_detect", "time_to_recover")}
                   for p, v in step["probes"].items()},
        "before": {p["name"]: p["before"] for p in result["probes"]},
        "inject_seconds": step.get("inject_seconds"), "revert_seconds":
        step.get("revert_seconds"), "leftovers": result["leftovers"],
        "loadavg": result["loadavg"]}))
    return result


@pytest.mark.kernel("ip_vs")
def test_real_server_killed_behind_lvs_and_keepalived(lvs, tmp_path):
    lab, busybox, docroot, run_dir = lvs
    watcher = Watcher(lab)
    watcher.start()
    started = time.monotonic()
    try:
        result = run("lvs-real-server-killed", tmp_path, LAB=lab.prefix, BUSYBOX=busybox,
                     DOCROOT=docroot)
        ran = time.monotonic()
        # keepalived gives rs1 its weight back once its check passes again
        wait_until(lambda: watcher.back is not None, "keepalived puts rs1 back")
        waited = time.monotonic()
    finally:
        watcher.done.set()
        watcher.join(10)
    log = Path(f"{run_dir}/keepalived.log").read_text()[-3000:]
    print("figures keepalived:", json.dumps({
        "weight_0_after_kill": watcher.zero and watcher.died and round(
            watcher.zero - watcher.died, 3),
        "weight_back_after_kill": watcher.back and watcher.died and round(
            watcher.back - watcher.died, 3),
        "run_seconds": round(ran - started, 1),
        "waited_after_run": round(waited - ran, 1),
        "timeline_seconds": result["timeline"]["seconds"]}))
    assert result["ok"] and result["error"] is None, (result, log)
    assert result["leftovers"] == [], result["leftovers"]
    [step] = result["steps"]
    assert step["kind"] == "kill" and step["fault"]["pids"]
    vip = step["probes"]["vip"]
    assert result["probes"][0]["before"]["failed"] == 0
    assert vip["during"]["failed"] > 0, vip          # IPVS sent requests to the dead rs1
    assert vip["after"]["failed"] == 0 and vip["after"]["requests"] > 0
    assert result["rollbacks"][0]["ready"]
    assert watcher.died is not None and watcher.zero is not None, log   # the check reacted
    assert weights(lab.netns("director")) == WEIGHTS          # nothing left over in IPVS


@pytest.mark.kernel("ip_vs", "sch_netem")
def test_delay_on_the_client_path_is_measured_back(lvs, tmp_path):
    lab = lvs[0]
    result = run("lvs-path-delay", tmp_path, LAB=lab.prefix)
    assert result["ok"] and result["error"] is None and result["leftovers"] == [], result
    [step] = result["steps"]
    assert step["kind"] == "delay" and step["fault"]["delay_ms"] == 100
    before = result["probes"][0]["before"]
    during = step["probes"]["connect"]["during"]
    assert during["failed"] == 0 and during["requests"] >= 10, during
    added = {p: during[f"latency_{p}_ms"] - before[f"latency_{p}_ms"] for p in ("p50", "p99")}
    print("figures delay added:", json.dumps(added),
          json.dumps({"timeline_seconds": result["timeline"]["seconds"]}))
    # generous: emulated timers are late (177 ms measured at host load 57), never early;
    # it catches a delay not in place or several times what was asked (Chaos Mesh #4364)
    assert 95 <= added["p50"] <= 250, (before, during)
