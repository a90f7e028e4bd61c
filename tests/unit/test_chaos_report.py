"""Chaos reports: the timeline buckets and time to recover from probe records, the probe
kinds of the schema, the Markdown of a result and the timeline plot (a real PNG)."""

from __future__ import annotations

import pytest

from dcnet.chaos import experiment as exp
from dcnet.chaos import report
from dcnet.chaos.probes import buckets, recovered_at
from dcnet.chaos.snapshot import diff

pytestmark = pytest.mark.unit

RECORDS = [(10.0, True), (10.05, True), (10.12, False), (10.31, False), (10.35, True),
           (10.5, True)]


def test_buckets_count_ok_and_failed_per_100_ms():
    assert buckets(RECORDS, 10.0, 10.5) == [[2, 0], [0, 1], [0, 0], [1, 1], [0, 0], [1, 0]]
    assert buckets([], 0.0, 0.0) == [[0, 0]]


def test_time_to_recover_is_the_first_success_after_the_last_failure():
    assert recovered_at(RECORDS, 10.1, 11.0) == pytest.approx(0.25)
    assert recovered_at(RECORDS, 10.32, 11.0) == 0.0            # nothing failed after
    assert recovered_at(RECORDS[:4], 10.1, 11.0) is None        # never recovered


PROBES = """\
chaos: 1
name: t
namespaces: [a]
watch_files: [/tmp/x/*]
probes:
  - {name: add, namespace: a, kind: cni-add, conflist: /tmp/n.conflist, cni_path: /opt/cni}
  - {name: r, namespace: a, kind: route, route: 10.244.1.0/24}
  - {name: v, namespace: a, url: "http://10.0.0.1/"}
method:
  - {pause: 1}
"""


def test_probe_kinds_read():
    e = exp.loads(PROBES)
    assert [p.kind for p in e.probes] == ["cni-add", "route", "http"]
    assert e.probes[0].conflist == "/tmp/n.conflist" and e.probes[1].route == "10.244.1.0/24"
    assert e.watch_files == ("/tmp/x/*",)


@pytest.mark.parametrize("old,new,message", [
    ("kind: route, route: 10.244.1.0/24", "kind: route", "route"),
    ("kind: cni-add, conflist: /tmp/n.conflist", "kind: cni-add, conflist: rel",
     "absolute path"),
    ("kind: route,", "kind: smtp,", "unknown probe kind"),
])
def test_probe_problems_are_located(old, new, message):
    with pytest.raises(exp.ExperimentError) as caught:
        exp.loads(PROBES.replace(old, new), "e.yaml")
    assert any(message in str(p) and "e.yaml:" in str(p) for p in caught.value.problems), \
        caught.value.problems


def test_snapshot_diff_names_what_was_added_and_removed():
    before = {"ns": {"links": ["lo", "eth0"], "processes": ["1x agent"]}}
    after = {"ns": {"links": ["lo", "eth0", "dcn123"], "processes": []}}
    assert diff(before, after) == ["ns: links: + dcn123", "ns: processes: - 1x agent"]
    assert diff(before, before) == []


RESULT = {
    "result_format": 2, "experiment": "agent-killed", "description": "the agent dies",
    "ok": True, "error": None, "leftovers": [], "loadavg": [3.1, 2.0, 1.5],
    "probes": [{"name": "add", "kind": "cni-add",
                "before": {"requests": 10, "failed": 0},
                "after": {"requests": 8, "failed": 0, "ok": True},
                "total": {"requests": 30, "failed": 4}}],
    "steps": [{"index": 0, "kind": "kill", "namespace": "n1", "duration": 2,
               "fault": {}, "inject_seconds": 0.001, "revert_seconds": 0.0,
               "probes": {"add": {"during": {"requests": 12, "failed": 4},
                                  "after": {"requests": 8, "failed": 0},
                                  "time_to_first_failure": 0.2, "time_to_detect": 1.9,
                                  "time_to_recover": 0.0}}}],
    "rollbacks": [{"argv": ["dcnet-agent", "run"], "namespace": "n1", "ready": True,
                   "seconds": 0.4}],
    "timeline": {"bucket_seconds": 0.1, "seconds": 1.0,
                 "events": [{"t": 0.0, "event": "steady before"},
                            {"t": 0.3, "event": "fault start", "step": 0, "what": "kill"},
                            {"t": 0.6, "event": "fault stop", "step": 0, "what": "kill"},
                            {"t": 0.7, "event": "rollback", "what": "dcnet-agent"}],
                 "probes": {"add": [[3, 0], [3, 0], [3, 0], [1, 2], [0, 2], [2, 0],
                                    [3, 0], [3, 0], [3, 0], [3, 0]]}},
}


def test_markdown_has_one_row_per_fault_and_probe():
    text = report.markdown(RESULT)
    assert "Result: **OK**" in text and "![timeline](timeline.png)" in text
    assert "| 0 | kill in n1 for 2 s | add | 4/12 | 0/8 | 0.200 s | 1.900 s | 0.000 s |" \
        in text
    assert "- nothing" in text and "3.1 2.0 1.5" in text
    broken = dict(RESULT, ok=False, leftovers=["n1: links: + dcn1"])
    assert "**NOT OK**" in report.markdown(broken) and "- n1: links: + dcn1" in \
        report.markdown(broken)


def test_write_makes_a_png_timeline(tmp_path):
    paths = report.write(RESULT, str(tmp_path / "r"))
    assert [p.rsplit("/", 1)[1] for p in paths] == ["result.json", "report.md",
                                                     "timeline.png"]
    with open(paths[2], "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_request_in_flight_is_waited_for_until_it_is_recorded():
    import threading
    import time

    from dcnet.chaos.probes import ProbeRunner

    release = threading.Event()

    class Blocking(ProbeRunner):
        def one(self) -> bool:
            release.wait(10)
            return True

    probe = Blocking(exp.Probe(name="b", namespace="x", interval=0))
    thread = threading.Thread(daemon=True, target=probe._loop)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not probe.in_flight_since(time.monotonic()) and time.monotonic() < deadline:
            time.sleep(0.01)
        moment = time.monotonic()
        assert probe.in_flight_since(moment) and probe.records == []
        probe._stop.set()
        release.set()
        thread.join(10)
        assert not probe.in_flight_since(moment) and len(probe.records) == 1
    finally:
        probe._stop.set()
        release.set()
        thread.join(10)


SHIPPED_VARIABLES = {
    "agent-killed-during-adds": {"LAB": "l", "AGENT": "/bin/dcnet-agent",
                                 "PYTHON": "/usr/bin/python3", "CONFLIST": "/t/n1.conflist",
                                 "CNI_PATH": "/t/bin", "IPAM_DIR": "/t/ipam",
                                 "NODE_FILE": "/t/node.json", "PEER_SUBNET": "10.244.1.0/24"},
    "etcd-member-killed": {"LAB": "l", "CONFLIST": "/t/c", "CNI_PATH": "/t/bin",
                           "IPAM_DIR": "/t/i", "PEER_SUBNET": "10.244.1.0/24",
                           "LOG_DIR": "/t", "MEMBER_ARGV": '["/usr/bin/etcd", "--name", "e"]'},
    "etcd-stopped": {"LAB": "l", "CONFLIST": "/t/c", "CNI_PATH": "/t/bin", "IPAM_DIR": "/t/i",
                     "PEER_SUBNET": "10.244.1.0/24", "LOG_DIR": "/t",
                     **{f"E{i}_ARGV": '["/usr/bin/etcd"]' for i in (1, 2, 3)}},
    "dhcp-server-gone": {"LAB": "l", "CONFLIST": "/t/c", "CNI_PATH": "/t/bin",
                         "STATE_DIR": "/t/s", "DNSMASQ_ARGV": '["dnsmasq", "-d"]',
                         "LOG": "/t/log"},
    "vrrp-failover": {"LAB": "l", "KEEPALIVED_ARGV": '["keepalived", "-n"]', "LOG": "/t/l"},
    "vrrp-director-partitioned": {"LAB": "l"},
}


@pytest.mark.parametrize("name", sorted(SHIPPED_VARIABLES))
def test_the_shipped_experiments_for_dcnet_validate(name):
    e = exp.load(exp.builtin(name), SHIPPED_VARIABLES[name])
    assert e.name == name and e.probes and e.method
    assert all(r.argv and r.argv[0] for r in e.rollbacks)       # a JSON list became argv
    if not name.startswith("vrrp-"):
        assert e.watch_files and {p.kind for p in e.probes} & {"cni-add"}
