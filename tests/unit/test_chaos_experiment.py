"""Chaos experiment files: the shipped ones validate, every schema problem is reported
with file, line and field, the scope is enforced, the nft rules of a fault, the journal's
pending/reverted bookkeeping and the probe window arithmetic."""

from __future__ import annotations

import pytest

from dcnet.chaos import experiment as exp
from dcnet.chaos.faults import nft_ruleset
from dcnet.chaos.journal import Journal
from dcnet.chaos.probes import window

pytestmark = pytest.mark.unit

GOOD = """\
chaos: 1
name: t
namespaces: [a, b]
probes:
  - name: vip
    namespace: a
    url: http://10.0.0.1:80/
method:
  - fault: kill
    namespace: b
    process: server
    duration: 1
  - pause: 0.5
  - fault: loss
    namespace: b
    percent: 30
    peer: 10.0.0.0/24
    duration: 2
"""


def problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(exp.ExperimentError) as info:
        exp.loads(text, "e.yaml")
    return [(p.line, p.path, p.message) for p in info.value.problems]


def test_a_good_experiment_reads():
    e = exp.loads(GOOD, "e.yaml")
    assert [s.kind for s in e.method] == ["kill", "pause", "loss"]
    assert e.method[2].peer == "10.0.0.0/24" and e.method[2].percent == 30
    assert e.probes[0].min_success == 0.99


@pytest.mark.parametrize("name, variables", [
    ("haproxy-real-server-killed", {"LAB": "x", "PYTHON": "/usr/bin/python3"}),
    ("haproxy-partition", {"LAB": "x", "DURATION": "3"}),
    ("dns-answer-follows-health", {"LAB": "x", "NAME": "web.elb.example.com"}),
])
def test_shipped_experiments_validate(name, variables):
    assert exp.load(exp.builtin(name), variables).name == name


@pytest.mark.parametrize("old, new, line, path, message", [
    ("namespace: b\n    process", "namespace: c\n    process", 10, "method[0].namespace",
     "not in the experiment's namespaces"),
    ("percent: 30", "percent: 300", 16, "method[2].percent", "between 1 and 100"),
    ("fault: kill", "fault: melt", 9, "method[0].fault", "unknown fault"),
    ("    process: server\n", "", 9, "method[0]", "exactly one of 'process' or 'pidfile'"),
    ("url: http://10.0.0.1:80/", "url: ftp://x", 7, "probes[0].url", "http:// URL"),
    ("peer: 10.0.0.0/24", "peer: 10.0.0.1/24", 17, "method[2].peer", "host bits"),
    ("    duration: 1\n", "    duration: 1\n    colour: red\n", 13, "method[0].colour",
     "unknown field"),
    ("process: server", "process: '('", 11, "method[0].process", "regular expression"),
])
def test_problems_are_located(old, new, line, path, message):
    assert_located(GOOD, old, new, line, path, message)


def assert_located(text: str, old: str, new: str, line: int, path: str, message: str):
    """Replacing ``old`` by ``new`` in ``text`` gives exactly one problem, there."""
    assert old in text
    [(got_line, got_path, got_message)] = problems(text.replace(old, new))
    assert (got_line, got_path) == (line, path)
    assert message in got_message


def test_an_undefined_variable_names_its_line():
    assert problems(GOOD.replace("namespace: b\n    percent", "namespace: ${NS}\n    percent")
                    ) == [(15, "", "undefined variable ${NS} (give it with --var NAME=VALUE)")]
    text = GOOD.replace("[a, b]", "[a, b, '${NS}']")
    assert exp.loads(text, "e.yaml", {"NS": "c"}).namespaces == ("a", "b", "c")


def test_an_empty_method_and_no_probes_are_refused():
    found = problems(GOOD.split("method:")[0].replace(
        "probes:\n  - name: vip\n    namespace: a\n    url: http://10.0.0.1:80/\n",
        "probes: []\n") + "method: []\n")
    assert [p for _, p, _ in found] == ["probes", "method"]


def test_nft_rules_drop_a_share_of_the_peers_traffic_in_every_direction():
    rules = nft_ruleset({"table": "dcnet_chaos_t_2", "percent": 30, "peer": "10.0.0.0/24"})
    assert rules.startswith("table inet dcnet_chaos_t_2 {")
    assert rules.count("numgen random mod 100 < 30 drop") == 3
    assert "ip saddr 10.0.0.0/24" in rules and rules.count("ip daddr 10.0.0.0/24") == 2
    full = nft_ruleset({"table": "t", "percent": 100, "peer": ""})
    assert "numgen" not in full and full.count("    drop") == 3


def test_the_journal_knows_what_is_pending(tmp_path):
    journal = Journal(str(tmp_path / "j.jsonl"))
    first = journal.record({"kind": "loss", "namespace": "a"})
    second = journal.record({"kind": "stop", "namespace": "b"})
    assert [n for n, _ in journal.pending()] == [second, first]     # newest first
    journal.reverted(second)
    with open(journal.path, "a") as handle:
        handle.write('{"op": "rev')                                  # torn by a crash
    assert [n for n, _ in journal.pending()] == [first]
    assert not journal.clear_if_done()
    journal.reverted(first)
    assert journal.clear_if_done() and not (tmp_path / "j.jsonl").exists()


def test_probe_window():
    records = [(0.5, True), (1.0, False), (1.2, True), (1.9, False), (2.5, False)]
    assert window(records, 1.0, 2.0) == {"requests": 3, "failed": 2, "success": 0.3333,
                                          "first_failure": 0.0, "last_failure": 0.9}
    assert window(records, 3.0, 4.0)["success"] is None


DNS_PROBE = """\
  - name: telecom-answer
    kind: dns
    namespace: a
    server: 192.0.2.1
    qname: web.elb.example.com
    qtype: AAAA
    expect: ['2001:db8::10', 2001:db8::11]
"""


def test_a_dns_probe_reads():
    text = GOOD.replace("method:", DNS_PROBE + "method:")
    probe = exp.loads(text, "e.yaml").probes[1]
    assert (probe.kind, probe.server, probe.qname, probe.qtype) == (
        "dns", "192.0.2.1", "web.elb.example.com", "AAAA")
    assert probe.expect == ("2001:db8::10", "2001:db8::11")


@pytest.mark.parametrize("old, new, line, path, message", [
    ("qtype: AAAA", "qtype: MX", 13, "probes[1].qtype", "query type"),
    ("2001:db8::11]", "10.0.0.1]", 14, "probes[1].expect[1]", "cannot answer a AAAA"),
    ("2001:db8::11]", "nope]", 14, "probes[1].expect[1]", "not an IP address"),
    ("expect: ['2001:db8::10', 2001:db8::11]", "expect: []", 14, "probes[1].expect",
     "at least one address"),
    ("server: 192.0.2.1", "server: ns1", 11, "probes[1].server", "not an IP address"),
    ("qname: web.elb.example.com", "qname: 'web elb'", 12, "probes[1].qname", "DNS name"),
])
def test_dns_probe_problems_are_located(old, new, line, path, message):
    assert_located(GOOD.replace("method:", DNS_PROBE + "method:"), old, new, line, path,
                   message)
