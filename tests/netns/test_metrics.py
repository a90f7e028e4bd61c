"""Metrics against real daemons: a real Prometheus (Debian's) scrapes ``elbctl exporter``
in front of a real HAProxy, found through the file-SD document ``elbctl metrics sd``
writes; its HTTP API returns the expected series after known operations (an apply, a
drift, a killed real server), and ``promtool check metrics`` / ``check rules`` are clean.

Everything listens on the loopback of the lab's ``lb`` namespace: the exporter is started
in the root namespace and opens its socket there with ``--netns``; Prometheus runs inside
the namespace, and the test queries it from a thread inside it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml

from dcnet.haproxy.paths import Paths
from dcnet.haproxy.runtime import send
from dcnet.lab import haproxy_lab as hlab
from dcnet.lab.cni_invoke import PluginError
from dcnet.metrics.haproxy_stat import parse_show_stat
from dcnet.metrics.sd import RULES_PATH
from dcnet.sysio import netns
from dcnet.target import session

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="Debian's prometheus is not installed (scripts/setup)")]

RS1, RS2 = hlab.server_address(1), hlab.server_address(2)
EXPORTER_PORT, PROMETHEUS_PORT, AGENT_PORT = 9108, 9090, 9109
SCRAPE = "1s"
BACKEND = f"{hlab.JOB}:{hlab.SERVICE_PORT}"


def model(servers):
    return hlab.model_of(hlab.model_data(servers))


def fetch(url: str, timeout: float = 5.0) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.read().decode()
    except urllib.error.HTTPError as exc:    # e.g. 503 while Prometheus starts
        exc.close()                          # (it holds the open response)
        raise OSError(f"{url}: HTTP {exc.code}") from None


@pytest.fixture
def director(lab_factory):
    """HAProxy over rs1 and rs2 (applied through session.run), ``elbctl exporter`` in front
    of it listening in lb, and Prometheus scraping it; yields a small helper object."""
    work = tempfile.mkdtemp(prefix="dcnet-metrics-")
    lab = lab_factory(hlab.topology(2))
    paths = Paths(run_dir=f"{work}/run")
    hlab.start_haproxy(lab, model({RS1: 10}), paths)
    assert session.run("haproxy", model({RS1: 10, RS2: 10}), {"run_dir": paths.run_dir},
                       apply=True).ok
    model_path = os.path.join(work, "model.yaml")
    with open(model_path, "w") as handle:
        yaml.safe_dump(hlab.model_data({RS1: 10, RS2: 10}), handle)
    with open(os.path.join(work, "exporter.log"), "w") as log:
        exporter = subprocess.Popen(
            # no -f: the series are labelled (and drift checked) with the applied model
            [sys.executable, "-m", "dcnet.cli.elbctl", "exporter", "--target", "haproxy",
             "--haproxy-run-dir", paths.run_dir,
             "--netns", lab.netns("lb"), "--metrics-address", f"127.0.0.1:{EXPORTER_PORT}",
             "--drift-interval", "0.5"], stdout=log, stderr=subprocess.STDOUT)
    helper = Director(lab, work, paths, model_path)
    try:
        helper.wait(lambda: helper.exporter_text(), "the exporter to answer", exporter)
        start_prometheus(lab, "lb", work, model_path, "--director", f"127.0.0.1:{EXPORTER_PORT}")
        helper.wait(lambda: helper.query('up{job="dcnet"} == 1'), "a first scrape")
        yield helper
    finally:
        exporter.send_signal(signal.SIGTERM)
        try:
            exporter.wait(10)
        except subprocess.TimeoutExpired:
            exporter.kill()
            exporter.wait()
        shutil.rmtree(work, ignore_errors=True)


def start_prometheus(lab, host: str, work: str, model_path: str, *sd_args: str) -> None:
    """Prometheus inside ``host`` on its loopback, scraping what ``elbctl metrics sd``
    lists (file SD), every second, with the shipped rules loaded."""
    sd_path = os.path.join(work, "targets.json")
    subprocess.run([sys.executable, "-m", "dcnet.cli.elbctl", "metrics", "sd",
                    "-f", model_path, *sd_args, "-o", sd_path], check=True)
    config = {"global": {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE},
              "rule_files": [RULES_PATH],
              "scrape_configs": [{"job_name": "dcnet", "file_sd_configs": [
                  {"files": [sd_path], "refresh_interval": "1s"}]}]}
    with open(os.path.join(work, "prometheus.yml"), "w") as handle:
        yaml.safe_dump(config, handle)
    lab.start(host, ["prometheus", f"--config.file={work}/prometheus.yml",
                     f"--storage.tsdb.path={work}/tsdb",
                     f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"],
              name="prometheus")


class Director:
    def __init__(self, lab, work, paths, model_path, host="lb", port=EXPORTER_PORT):
        self.lab, self.work, self.paths, self.model_path = lab, work, paths, model_path
        self.host, self.port = host, port

    def exporter_text(self) -> str:
        return self.lab.call(self.host, fetch, f"http://127.0.0.1:{self.port}/metrics")

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr, **({"time": str(at)} if at is not None else {})}
        url = (f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query?"
               + urllib.parse.urlencode(params))
        answer = json.loads(self.lab.call(self.host, fetch, url))
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def value(self, expr: str, at: float | None = None) -> float | None:
        result = self.query(expr, at)
        return float(result[0]["value"][1]) if result else None

    def last_scrape(self) -> float:
        return float(self.query('timestamp(up{job="dcnet"})')[0]["value"][1])

    def wait(self, condition, what: str, process=None, limit: float = 60.0):
        """Wait (bounded) until ``condition()`` is truthy, failing with ``what``."""
        deadline = time.monotonic() + limit
        last_error = None
        while True:
            try:
                value = condition()
            except OSError as exc:
                value, last_error = None, exc
            if value:
                return value
            if process is not None and process.poll() is not None:
                pytest.fail(f"the process waited for exited ({process.returncode})")
            if time.monotonic() > deadline:
                pytest.fail(f"gave up waiting for {what}"
                            + (f" (last error: {last_error})" if last_error else ""))
            time.sleep(0.2)


def test_prometheus_sees_the_apply_the_servers_and_the_service_info(director):
    applies = director.value('dcnet_elb_applies_total{target="haproxy",result="ok"}')
    assert applies == 1
    assert director.value(f'dcnet_haproxy_backend_servers{{service="{hlab.JOB}",'
                          f'state="up"}}') == 2 or director.wait(
        lambda: director.value(f'dcnet_haproxy_backend_servers{{service="{hlab.JOB}",'
                               f'state="up"}}') == 2, "both servers up")
    assert director.value(f'dcnet_elb_vip_healthy_servers{{service="{hlab.JOB}",'
                          f'carrier="bgp"}}') == 2
    info = director.query("dcnet_service_info")
    assert info[0]["metric"]["tag_cluster"] == "prod"
    assert info[0]["metric"]["carriers"] == "bgp"
    assert director.value('dcnet_elb_seconds_since_last_successful_sync{target="haproxy"}') \
        < 3600
    # a known operation: one more apply (rs2 removed) is counted, its writes too
    assert session.run("haproxy", model({RS1: 10}), {"run_dir": director.paths.run_dir},
                       apply=True).ok
    director.wait(lambda: director.value(
        'dcnet_elb_applies_total{target="haproxy",result="ok"}') == 2, "the second apply")
    director.wait(lambda: director.value(
        f'dcnet_haproxy_backend_servers{{service="{hlab.JOB}",state="up"}}') == 1,
        "one server left")
    assert director.value('sum(dcnet_elb_writes_total{target="haproxy"})') > 0


def test_drift_is_seen_when_haproxy_differs_from_the_applied_model(director):
    assert director.wait(lambda: director.query('dcnet_elb_drift{target="haproxy"} == 0'),
                         "a first drift check")
    send(director.paths.admin_socket, f"set server {BACKEND}/s1 weight 1")
    director.wait(lambda: director.query('dcnet_elb_drift{target="haproxy"} == 1'),
                  "drift to be reported")


def test_a_killed_real_server_is_visible_within_one_scrape(director):
    server = f'dcnet_haproxy_server_up{{service="{hlab.JOB}",server="{RS1}:{hlab.SERVER_PORT}"}}'
    director.wait(lambda: director.value(server) == 1, "rs1 up in Prometheus")
    director.lab.process("rs1-http").kill()
    # HAProxy's own health check decides when rs1 is down (fall x interval); from then
    # on the very next scrape must show it
    def rs1_state():
        stats = parse_show_stat(send(director.paths.admin_socket, "show stat"))
        return next(s.state for s in stats.servers if s.server.startswith(f"{RS1}:")
                    and s.port == str(hlab.SERVICE_PORT))

    director.wait(lambda: rs1_state() == "down", "HAProxy to mark rs1 down")
    seen_down = time.time()
    director.wait(lambda: director.last_scrape() > seen_down, "the next scrape")
    assert director.value(f"{server} == 0", at=director.last_scrape()) is not None
    assert director.value(f'dcnet_elb_vip_healthy_servers{{service="{hlab.JOB}"}}',
                          at=director.last_scrape()) == 1


def test_a_short_lived_apply_pushes_to_a_real_pushgateway(director):
    gateway = "127.0.0.1:9091"
    director.lab.start("lb", ["prometheus-pushgateway", f"--web.listen-address={gateway}",
                              "--persistence.file="], name="pushgateway")
    director.wait(lambda: director.lab.call("lb", fetch, f"http://{gateway}/-/ready"),
                  "the Pushgateway")
    with open(director.model_path, "w") as handle:
        yaml.safe_dump(hlab.model_data({RS1: 5, RS2: 10}), handle)
    done = director.lab.run("lb", [sys.executable, "-m", "dcnet.cli.elbctl", "apply", "-f",
                                   director.model_path, "--target", "haproxy",
                                   "--haproxy-run-dir", director.paths.run_dir],
                            env={**os.environ, "DCNET_PUSHGATEWAY": gateway})
    applied, _of, planned = done.stdout.split()[1:4]
    assert applied == planned and int(applied) >= 1, done.stdout + done.stderr
    pushed = director.lab.call("lb", fetch, f"http://{gateway}/metrics")
    assert 'dcnet_elbctl_last_run_success{instance="",job="dcnet_elbctl",target="haproxy"} 1' \
        in pushed
    assert ('dcnet_elbctl_last_run_changes{instance="",job="dcnet_elbctl",outcome="applied",'
            f'target="haproxy"}} {applied}') in pushed


def test_promtool_check_metrics_is_clean_on_the_exporter(director):
    text = director.exporter_text()
    check = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                           capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "" and check.stderr.strip() == "", check.stderr


def test_promtool_check_rules_is_clean_on_the_shipped_rules():
    check = subprocess.run(["promtool", "check", "rules", RULES_PATH], capture_output=True,
                           text=True)
    assert check.returncode == 0 and "SUCCESS" in check.stdout, check.stdout + check.stderr


@pytest.fixture
def agent_node(lab_factory, tmp_path):
    """A host-gw ``dcnet-agent`` serving the shim and ``--metrics-address`` in its node
    namespace, scraped by Prometheus there (found through ``elbctl metrics sd --agent``)."""
    from tests.netns.test_cni_shim import Node

    made = Node(lab_factory({"hosts": ["n1"]}), tmp_path)
    made.start_agent("--metrics-address", f"127.0.0.1:{AGENT_PORT}")
    model_path = os.path.join(str(tmp_path), "model.yaml")
    with open(model_path, "w") as handle:
        yaml.safe_dump(hlab.model_data({RS1: 1}), handle)
    helper = Director(made.lab, str(tmp_path), None, model_path, host="n1", port=AGENT_PORT)
    start_prometheus(made.lab, "n1", str(tmp_path), model_path,
                     "--agent", f"127.0.0.1:{AGENT_PORT}")
    helper.wait(lambda: helper.query('up{job="dcnet",dcnet_role="agent"} == 1'),
                "a first scrape of the agent")
    yield made, helper
    for name in made.pods:
        netns.remove(name)
    if made.agent.poll() is None:
        made.agent.terminate()
        made.agent.wait(timeout=10)
    if os.path.exists(made.socket):
        os.unlink(made.socket)


def test_prometheus_sees_the_agent_operations_pool_and_reconcile(agent_node):
    node, prom = agent_node
    rt = node.runtime()
    pod = node.pod("p0")
    rt.add("c0", pod)
    rt.check("c0", pod)
    with pytest.raises(PluginError):
        rt.add("c1", "/run/netns/no-such-pod")
    prom.wait(lambda: prom.value('dcnet_agent_cni_operations_total{command="CHECK",'
                                 'result="ok"}') == 1, "the CHECK")
    assert prom.value('dcnet_agent_cni_operations_total{command="ADD",result="ok"}') == 1
    assert prom.value('dcnet_agent_cni_operations_total{command="ADD",result="error"}') == 1
    assert prom.value('dcnet_agent_cni_operation_duration_seconds_count{command="ADD"}') == 2
    assert prom.value('dcnet_agent_ipam_pool_addresses{state="used"}') == 1
    assert prom.value('dcnet_agent_ipam_pool_addresses{state="size"}') == 253
    assert prom.value('dcnet_agent_reconcile_passes_total{result="ok"}') >= 1
    assert prom.value("dcnet_agent_store_degraded") == 0
    rt.delete("c0", pod)
    prom.wait(lambda: prom.value('dcnet_agent_ipam_pool_addresses{state="used"}') == 0,
              "the address back in the pool")
    check = subprocess.run(["promtool", "check", "metrics"], input=prom.exporter_text(),
                           text=True, capture_output=True)
    assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), \
        check.stdout + check.stderr


def test_elbctl_agent_serves_sync_status_and_etcd_health(lab_factory, tmp_path):
    """``elbctl agent --metrics-address`` on a director following etcd: its applies (the
    same status series as ``elbctl exporter``), HAProxy's servers and etcd health."""
    from dcnet.lab import elbstore_lab as elab

    elb = elab.ElbLab.create(lab_factory, str(tmp_path), directors=1, servers=2)
    v1 = elab.model_data({elab.server_address(1): 10})
    assert elb.push(v1, user=None) == 1
    name = elb.directors[0]
    elb.start_director(name, v1)
    plain = elb.agents[f"agent-{name}"]
    plain.terminate()
    plain.wait(10)
    paths = elb.paths(name)
    elb.lab.start(name, [sys.executable, "-m", "dcnet.cli.elbctl", "agent", "--store",
                         elb.url(), "--director", name, "--target", "haproxy",
                         "--haproxy-run-dir", paths.run_dir, "--cache-dir",
                         str(tmp_path / name / "cache2"), "--metrics-address",
                         f"127.0.0.1:{EXPORTER_PORT}"], name="agent-metrics")
    scrape = Director(elb.lab, str(tmp_path), paths, None, host=name)
    assert elb.push(elab.model_data({elab.server_address(1): 10,
                                     elab.server_address(2): 10}), user=None) == 2

    seen = []

    def synced():
        text = scrape.exporter_text()
        seen[:] = [text]
        return ('dcnet_elb_applies_total{result="ok",target="haproxy"}' in text
                and "dcnet_elb_agent_model_revision 2.0" in text
                and f'dcnet_service_info{{carriers="bgp",service="{elab.JOB}"' in text
                and text)

    try:
        text = scrape.wait(synced, "the agent to apply revision 2")
    except BaseException:
        print("".join(seen) or "nothing scraped")      # shown by pytest on failure
        raise
    assert "dcnet_elb_agent_etcd_up 1.0" in text
    assert 'dcnet_exporter_source_up{source="haproxy"} 1.0' in text
    check = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                           capture_output=True)
    assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), \
        check.stdout + check.stderr
