"""The link and traffic-control faults as data: the schema of link-down, link-flap, rate
and delay (every problem with file, line and field), rate parsing, how stacked faults of
one interface combine into one tree, iproute2's argv for a netem with a distribution,
and the journal of a qdisc fault keeping what a new process needs to revert it."""

from __future__ import annotations

import pytest

from dcnet.chaos import experiment as exp
from dcnet.chaos import qdisc
from dcnet.chaos.journal import Journal

pytestmark = pytest.mark.unit

HEAD = """\
chaos: 1
name: t
namespaces: [a, b]
probes:
  - {name: vip, namespace: a, url: "http://10.0.0.1:80/"}
method:
"""


def steps(*lines: str) -> tuple[exp.Step, ...]:
    return exp.loads(HEAD + "".join(f"  - {line}\n" for line in lines), "e.yaml").method


def problems(*lines: str) -> list[tuple[str, int | None, str, str]]:
    with pytest.raises(exp.ExperimentError) as info:
        steps(*lines)
    return [(p.source, p.line, p.path, p.message) for p in info.value.problems]


def test_the_new_fault_kinds_read_with_their_defaults():
    down, flap, rate, delay = steps(
        "{fault: link-down, namespace: b, interface: eth0, duration: 2}",
        "{fault: link-flap, namespace: b, interface: eth0, period: 0.5, count: 4, duration: 3}",
        "{fault: rate, namespace: b, interface: eth0, rate: 1.5mbit, hold: true, duration: 1}",
        "{fault: delay, namespace: a, interface: veth-x, delay: 300, jitter: 30, "
        "distribution: normal, loss: 0.5, correlation: 25, duration: 5}")
    assert (down.kind, down.interface, down.duration) == ("link-down", "eth0", 2.0)
    assert (flap.period, flap.count) == (0.5, 4)
    assert (rate.rate_bps, rate.burst, rate.latency_ms, rate.hold) == (1_500_000, 32768,
                                                                        50.0, True)
    assert (delay.delay_ms, delay.jitter_ms, delay.distribution, delay.loss,
            delay.correlation, delay.hold) == (300.0, 30.0, "normal", 0.5, 25.0, False)


def test_schema_errors_name_file_line_and_field():
    got = problems(
        "{fault: link-down, namespace: b, duration: 2}",
        "{fault: link-flap, namespace: b, interface: eth0, period: 0, duration: 3}",
        "{fault: rate, namespace: b, interface: eth0, rate: fast, duration: 1}",
        "{fault: rate, namespace: b, interface: eth0, duration: 1}",
        "{fault: delay, namespace: a, interface: eth0, delay: 10, jitter: 20, duration: 1}",
        "{fault: delay, namespace: a, interface: eth0, delay: 10, distribution: normal, "
        "duration: 1}",
        "{fault: delay, namespace: a, interface: eth0, delay: 10, loss: 120, duration: 1}",
        "{fault: delay, namespace: c, interface: this-name-is-too-long0, delay: 1, "
        "duration: 1}",
        "{fault: link-down, namespace: b, interface: eth0, percent: 3, duration: 1}")
    assert got == [
        ("e.yaml", 7, "method[0]", "missing required field 'interface'"),
        ("e.yaml", 8, "method[1].period", "must be between 0.05 and 3600, got 0"),
        ("e.yaml", 9, "method[2].rate",
         "must be a rate like 1mbit, 500kbit or bits per second, got 'fast'"),
        ("e.yaml", 10, "method[3]", "missing required field 'rate'"),
        ("e.yaml", 11, "method[4].jitter", "jitter must not exceed the delay"),
        ("e.yaml", 12, "method[5].distribution", "a delay distribution needs a jitter > 0"),
        ("e.yaml", 13, "method[6].loss", "must be between 0 and 100, got 120"),
        ("e.yaml", 14, "method[7].interface",
         "'this-name-is-too-long0' is not valid: an interface name (at most 15)"),
        ("e.yaml", 14, "method[7].namespace",
         "namespace 'c' is not in the experiment's namespaces (its scope)"),
        ("e.yaml", 15, "method[8].percent",
         "unknown field (expected one of: duration, fault, hold, interface, namespace)"),
    ]


def test_rates_parse_with_units_and_bounds():
    assert qdisc.parse_rate("1mbit") == 1_000_000
    assert qdisc.parse_rate("500kbit") == 500_000
    assert qdisc.parse_rate(" 2GBit ") == 2_000_000_000
    assert qdisc.parse_rate(64000) == 64000
    for bad in ("1mb", "fast", True, 100, "200gbit"):
        with pytest.raises(ValueError):
            qdisc.parse_rate(bad)


def delay(ms, jitter=0.0, loss=0.0, corr=0.0, dist="uniform"):
    return {"kind": "delay", "delay_ms": ms, "jitter_ms": jitter, "loss": loss,
            "correlation": corr, "distribution": dist}


def rate(bps, burst=32768, latency=50.0):
    return {"kind": "rate", "rate_bps": bps, "burst": burst, "latency_ms": latency}


def test_stacked_faults_combine_instead_of_overriding():
    assert qdisc.combine([]) == {"tbf": None, "netem": None}
    tree = qdisc.combine([delay(50, 5, loss=10), rate(10_000_000), rate(1_000_000, 4000, 20),
                          delay(20, 2, loss=10, corr=25, dist="pareto")])
    assert tree["tbf"] == {"rate_bps": 1_000_000, "burst": 4000, "latency_ms": 20}
    assert tree["netem"] == {"delay_ms": 70, "jitter_ms": 7, "loss": 19.0, "correlation": 25,
                             "distribution": "pareto"}
    # reverting one: the tree of the others
    assert qdisc.combine([rate(10_000_000)])["netem"] is None
    assert qdisc.combine([delay(50)])["tbf"] is None


def test_netem_with_a_distribution_goes_through_tc():
    netem = qdisc.combine([delay(100, 10, loss=1, corr=25, dist="normal")])["netem"]
    assert qdisc._netem_tc_argv("eth0", "parent 1:1", netem) == [
        "tc", "qdisc", "add", "dev", "eth0", "parent", "1:1", "handle", "10:", "netem",
        "delay", "100ms", "10ms", "25%", "distribution", "normal", "loss", "1.0%"]
    assert qdisc._netem_args(qdisc.combine([delay(100, 10, loss=1, corr=25)])["netem"]) == {
        "delay": 100000, "jitter": 10000, "loss": 1.0, "loss_corr": 25, "delay_corr": 25}


def test_a_qdisc_fault_journal_record_survives_a_new_process(tmp_path, monkeypatch):
    monkeypatch.setenv(qdisc.ENV_DIR, str(tmp_path / "stack"))
    record = {"kind": "rate", "namespace": "n", "interface": "eth0", "key": "e/0/1-2",
              **rate(1_000_000)}
    journal = Journal(str(tmp_path / "journal.jsonl"))
    number = journal.record(record)
    assert Journal(journal.path).pending() == [(number, record)]
    assert qdisc.stack_path("n", "eth0") == str(tmp_path / "stack" / "n--eth0.json")


def test_dhcp_churn_schema_and_release_packet(tmp_path):
    [churn] = steps("{fault: dhcp-churn, namespace: b, interface: eth0, leasefile: /l, "
                    "server: 10.0.0.2, clients: '^pod-', period: 2, duration: 5}")
    assert (churn.leasefile, churn.server, churn.clients, churn.period) == ("/l", "10.0.0.2",
                                                                          "^pod-", 2.0)
    assert problems("{fault: dhcp-churn, namespace: b, interface: eth0, leasefile: l, "
                    "server: 'fd00::1', clients: '(', duration: 1}") == [
        ("e.yaml", 7, "method[0].clients",
         "not a regular expression: missing ), unterminated subpattern at position 0"),
        ("e.yaml", 7, "method[0].leasefile", "'l' is not valid: an absolute path"),
        ("e.yaml", 7, "method[0].server", "DHCPv4 only: an IPv4 address")]
    from dcnet.chaos import dhcpchurn
    path = tmp_path / "leases"
    path.write_text("1700000000 02:00:00:00:00:01 10.0.0.101 pod-a 01:02:00:00:00:00:01\n"
                    "1700000000 02:00:00:00:00:02 10.0.0.102 other *\n"
                    "duid 00:01:00:01\n")
    [lease] = dhcpchurn.matching(str(path), "^pod-")
    packet = dhcpchurn.release_packet(lease, "10.0.0.2")
    assert packet[0] == 1 and packet[12:16] == bytes([10, 0, 0, 101])       # ciaddr
    assert packet[28:34] == bytes.fromhex("020000000001")                   # chaddr
    assert packet[236:240] == dhcpchurn.MAGIC
    assert packet[240:] == (bytes([53, 1, 7, 54, 4, 10, 0, 0, 2, 61, 7])
                            + bytes.fromhex("01020000000001") + b"\xff")
    assert [x["clientid"] for x in dhcpchurn.leases(str(path))] == ["01:02:00:00:00:00:01", ""]
