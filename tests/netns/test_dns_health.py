"""DNS follows health with real daemons: named, HAProxy and ``elbctl dns follow`` in a lab.

Stopping the service's last real server makes HAProxy mark it down; the follow loop
(reading HAProxy's server states as telecom's) withdraws telecom's answer, so a telecom
client's ``dig`` gets the default line's VIP; starting the server again restores it.
The etcd registry source is read from a real etcd cluster. Waits are bounded by generous
deadlines; no duration is asserted (see bench/dns_health.py).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request

import pytest
import yaml

from dcnet.dns.health import RegistrySource, SourceError, observe
from dcnet.elbstore.keys import Keys
from dcnet.elbstore.records import encode_entry
from dcnet.elbstore.store import ElbStore
from dcnet.lab.dns_health_lab import (
    DEFAULT_VIP,
    TELECOM_VIP,
    HealthLab,
    model_data,
    topology,
)
from dcnet.model import load_model
from dcnet.sysio import proc

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(shutil.which("haproxy") is None or shutil.which("named")
                                 is None, reason="needs haproxy and named")]


METRICS = "127.0.0.1:9113"


@pytest.fixture
def health_lab(lab_factory, tmp_path) -> HealthLab:
    return HealthLab(lab_factory(topology()), str(tmp_path / "elb"),
                     follow_args=("--metrics-address", METRICS))


def metrics(env: HealthLab) -> str:
    """The follow loop's /metrics, fetched inside the lab's ``lb`` namespace."""
    def fetch() -> str:
        with urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=10) as answer:
            return answer.read().decode()
    return env.lab.call("lb", fetch)


def test_last_real_server_down_withdraws_the_carrier_answer_and_up_restores_it(health_lab):
    env = health_lab
    assert env.answer("telecom") == [TELECOM_VIP]
    assert env.answer("none") == [DEFAULT_VIP]
    env.wait_answer("telecom", TELECOM_VIP)
    env.stop_server()
    env.wait_answer("telecom", DEFAULT_VIP, deadline=90)
    assert env.answer("none") == [DEFAULT_VIP]
    assert "on telecom: withdrawn (no healthy real server for" in env.log()
    job = env.model.services[0].name
    text = metrics(env)
    assert f'dcnet_dns_answer_withdrawn{{carrier="telecom",service="{job}"}} 1.0' in text
    assert 'dcnet_dns_follow_events_total{event="withdrawn"} 1.0' in text
    assert "dcnet_dns_zone_serial{" in text
    check = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                           capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    env.start_server()
    env.wait_answer("telecom", TELECOM_VIP, deadline=90)
    assert "on telecom: restored (healthy for" in env.log()
    assert env.follow.poll() is None
    # named serves what the follow loop last applied: an explicit plan of the overlay
    # with nothing withdrawn is empty (nothing left behind)
    done = env.elbctl("plan", "--target", "dns", "-f", env.model_path, "--dns-dir",
                      env.bind_dir, "--dns-rndc-key", env.key, "--detailed-exitcode")
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_restarted_loop_keeps_the_answer_withdrawn(health_lab):
    env = health_lab
    env.stop_server()
    env.wait_answer("telecom", DEFAULT_VIP, deadline=90)
    proc.stop(env.follow, 3.0)
    once = env.elbctl("dns", "follow", "-f", env.model_path, "--haproxy",
                      f"{env.paths.admin_socket}=telecom", "--once", "--dns-dir",
                      env.bind_dir, "--dns-rndc-key", env.key)
    assert once.returncode == 0, once.stderr
    assert "restored state: withdrawn" in once.stderr
    assert "dns applied" not in once.stderr          # BIND already says so: no change
    assert env.answer("telecom") == [DEFAULT_VIP]


def test_the_etcd_registry_source_on_a_real_cluster(etcd_cluster, tmp_path):
    """Backends registered in etcd as dcnet-init registers them: active counts, draining
    does not; etcd away is a source error (DNS then stays as it is)."""
    (tmp_path / "telecom.txt").write_text("192.0.2.0/26\n")
    (tmp_path / "elb.yaml").write_text(yaml.safe_dump(model_data()))
    model = load_model(tmp_path / "elb.yaml")
    job = model.services[0].name
    client = etcd_cluster.client()
    store = ElbStore(client, Keys())

    def register(ident, state):
        client.put(store.keys.backend(job, ident), encode_entry(
            {"weight": 1, "state": state}, "test", time.time()))

    source = RegistrySource(store, carriers=("telecom",))
    assert source.read(model) == {}                   # nothing registered: unknown
    register("10.252.0.11", "draining")
    assert source.read(model) == {(TELECOM_VIP, 80): 0}
    assert observe(model, source.read(model)) == {(job, "telecom"): False}
    register("10.252.0.12", "active")
    assert source.read(model) == {(TELECOM_VIP, 80): 1}
    assert observe(model, source.read(model)) == {(job, "telecom"): True}
    etcd_cluster.stop_all()
    with pytest.raises(SourceError):
        source.read(model)
