"""netbench runners: commands built, and pure parsers run on CAPTURED tool output.

Every file under tests/data/netbench/ is real output captured on this machine (iperf3
3.12, sockperf 3.7, qperf 0.4.11, /proc/stat, ethtool -k of a veth, the connprog client),
including the tools' error outputs: connection refused, timeout, busy server, bad
parameters, unresolvable host, UDP replies dropped (qperf exits 0 there).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dcnet.netbench import connrate, cpustat, environment, iperf3, qperf, sockperf
from dcnet.netbench.definition import TestSpec
from dcnet.netbench.tools import ToolFailed, first_line, strip_ansi

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent.parent / "data" / "netbench"


def captured(name: str) -> str:
    return (DATA / name).read_text()


# ---------------------------------------------------------------- iperf3


def test_iperf3_single_stream_tcp():
    m = iperf3.parse(captured("iperf3_tcp1.json"))
    assert m.metrics["gbps"] == pytest.approx(m.metrics["bytes"] * 8 / m.metrics["seconds"]
                                              / 1e9, rel=1e-3)
    assert m.metrics["gbps"] > 1.0
    assert m.metrics["run_bytes"] >= m.metrics["bytes"] * 0.9  # omitted second included
    assert m.metrics["client_cpu_pct"] > 0 and m.metrics["server_cpu_pct"] > 0
    assert m.details["streams"] == 1
    assert m.details["version"] == "iperf 3.12"


def test_iperf3_four_streams_sums_receiver_side():
    m = iperf3.parse(captured("iperf3_tcp4.json"))
    assert m.details["streams"] == 4
    assert m.metrics["gbps"] == pytest.approx(7.836354318, rel=1e-6)  # sum_received
    assert m.metrics["sent_gbps"] == pytest.approx(7.829193508, rel=1e-6)
    assert m.metrics["retransmits"] == 45


def test_iperf3_udp_reports_received_rate_and_loss():
    m = iperf3.parse(captured("iperf3_udp.json"))
    assert m.metrics["gbps"] == pytest.approx(0.34607648, rel=1e-6)
    assert m.metrics["sent_gbps"] > m.metrics["gbps"]
    assert m.metrics["loss_pct"] == pytest.approx(79.295, rel=1e-3)
    assert "retransmits" not in m.metrics


@pytest.mark.parametrize("name, message", [
    ("iperf3_refused.json", "unable to connect to server: Connection refused"),
    ("iperf3_timeout.json", "unable to connect to server: Connection timed out"),
    ("iperf3_busy.json", "the server is busy running a test"),
])
def test_iperf3_error_documents(name, message):
    with pytest.raises(ToolFailed, match=message):
        iperf3.parse(captured(name))


def test_iperf3_parameter_error_uses_stderr_not_usage():
    with pytest.raises(ToolFailed, match="number of parallel streams too large"):
        iperf3.parse(captured("iperf3_param_error.stdout"),
                     captured("iperf3_param_error.stderr"), 1)


def test_iperf3_empty_and_broken_output():
    with pytest.raises(ToolFailed, match="no output"):
        iperf3.parse("", "", 137)
    with pytest.raises(ToolFailed, match="not valid JSON"):
        iperf3.parse(captured("iperf3_tcp1.json")[:500])


def test_iperf3_commands():
    tcp = TestSpec("t", "tcp", duration=2, omit=1, streams=4)
    argv = iperf3.client_argv(tcp, "10.0.0.2", 5201)
    assert argv[:5] == ["iperf3", "-c", "10.0.0.2", "-p", "5201"]
    assert "-J" in argv and argv[argv.index("-P") + 1] == "4"
    assert argv[argv.index("-t") + 1] == "2" and argv[argv.index("-O") + 1] == "1"
    assert "-u" not in argv
    udp = TestSpec("u", "udp", duration=1.5, omit=0, length=1200, bitrate="1G")
    argv = iperf3.client_argv(udp, "10.0.0.2", 5201)
    assert argv[argv.index("-b") + 1] == "1G" and argv[argv.index("-l") + 1] == "1200"
    assert argv[argv.index("-t") + 1] == "1.5"
    assert iperf3.server_argv("10.0.0.2", 5300) == ["iperf3", "-s", "-B", "10.0.0.2", "-p",
                                                    "5300"]
    assert iperf3.client_timeout(tcp) > tcp.duration + tcp.omit


# ---------------------------------------------------------------- sockperf


def test_sockperf_tcp_ping_pong_percentiles():
    m = sockperf.parse(captured("sockperf_pingpong_tcp.txt"))
    assert m.metrics["p50_us"] == pytest.approx(12.673)
    assert m.metrics["p90_us"] == pytest.approx(19.110)
    assert m.metrics["p99_us"] == pytest.approx(32.064)
    assert m.metrics["p999_us"] == pytest.approx(191.823)
    assert m.metrics["max_us"] == pytest.approx(2024.649)
    assert m.metrics["min_us"] == pytest.approx(8.410)
    assert m.metrics["avg_us"] == pytest.approx(14.671)
    assert m.metrics["round_trips_per_s"] == pytest.approx(52791 / 1.552)
    assert m.details["received"] == 52791


def test_sockperf_udp_ping_pong():
    m = sockperf.parse(captured("sockperf_pingpong_udp.txt"))
    assert m.metrics["p50_us"] < m.metrics["p99_us"] <= m.metrics["p999_us"]
    assert m.metrics["dropped"] == 0


@pytest.mark.parametrize("name, message", [
    ("sockperf_refused.txt", "Can`t connect socket \\(errno=111 Connection refused\\)"),
    ("sockperf_bad_message_size.txt", "Invalid message size: 1"),
])
def test_sockperf_error_outputs(name, message):
    with pytest.raises(ToolFailed, match=message):
        sockperf.parse(captured(name))


def test_sockperf_full_log_rows():
    latencies = sockperf.parse_full_log(captured("sockperf_full_log_head.csv"))
    assert latencies[:3] == [8.556, 8.581, 8.967]
    assert len(latencies) == 39  # the captured head holds 39 rows after the header line
    with pytest.raises(ToolFailed, match="no 'packet,' header"):
        sockperf.parse_full_log(captured("sockperf_pingpong_tcp.txt"))


def test_sockperf_commands():
    spec = TestSpec("l", "latency", duration=1.2, protocol="tcp", message_size=64)
    argv = sockperf.client_argv(spec, "10.0.0.2", 11111, "/tmp/x.csv")
    assert argv[:2] == ["sockperf", "ping-pong"]
    assert argv[argv.index("-t") + 1] == "2"  # whole seconds, rounded up
    assert "--tcp" in argv and argv[-2:] == ["--full-log", "/tmp/x.csv"]
    udp = TestSpec("l", "latency", protocol="udp")
    assert "--tcp" not in sockperf.client_argv(udp, "10.0.0.2", 11112)
    assert sockperf.port_for(udp) == sockperf.UDP_PORT
    assert sockperf.server_argv("10.0.0.2", "tcp", 11111)[-1] == "--tcp"


def test_strip_ansi_on_sockperf_colours():
    line = captured("sockperf_pingpong_tcp.txt").splitlines()[0]
    assert "\x1b" in line and "\x1b" not in strip_ansi(line)


# ---------------------------------------------------------------- qperf
# Captured between two network namespaces joined by a veth pair (fd00:99::1 ->
# fd00:99::2 and 10.99.0.1 -> 10.99.0.2), server `qperf` in the second, client argv as
# qperf.client_argv builds it (udp_lost: nft dropping the data port's UDP at the server).


def test_qperf_tcp_lat_over_ipv6():
    m = qperf.parse(captured("qperf_tcp_lat_v6.txt"))
    assert m.metrics["mean_us"] == pytest.approx(6.22467)
    # one-way mean: 2 s / (160,652 sent + 160,651 received) messages
    assert m.metrics["round_trips_per_s"] == pytest.approx(160651 / 2, rel=1e-4)
    assert m.details == {"test": "tcp_lat", "sent": 160652, "received": 160651,
                         "time_s": 2.0, "message_size": 64, "messages_per_s": 160651.0}


@pytest.mark.parametrize("name, test, mean", [
    ("qperf_udp_lat_v6.txt", "udp_lat", 3.24318), ("qperf_tcp_lat_v4.txt", "tcp_lat", 8.76586)])
def test_qperf_other_captures(name, test, mean):
    m = qperf.parse(captured(name))
    assert (m.details["test"], m.metrics["mean_us"]) == (test, pytest.approx(mean))


def test_qperf_latency_units():
    text = captured("qperf_tcp_lat_v6.txt").replace("6.22467 us", "   1.5 ms")
    assert qperf.parse(text).metrics["mean_us"] == pytest.approx(1500.0)
    with pytest.raises(ToolFailed, match="unknown latency unit 'fortnights'"):
        qperf.parse(text.replace("1.5 ms", "1.5 fortnights"))


@pytest.mark.parametrize("name, returncode, message", [
    ("qperf_refused.txt", 1, "qperf: fd00:99::2: failed to connect$"),
    ("qperf_badhost.txt", 1, "qperf: getaddrinfo failed: Temporary failure in name"),
    # exit 0, "latency = 0 ns", one message sent and none received
    ("qperf_udp_lost.txt", 0, "qperf: no reply came back \\(1 sent, 0 received"),
])
def test_qperf_failures(name, returncode, message):
    with pytest.raises(ToolFailed, match=message):
        qperf.parse(captured(name), "", returncode)


def test_qperf_empty_output_and_nonzero_exit():
    with pytest.raises(ToolFailed, match="no output \\(exit 2\\)"):
        qperf.parse("", "", 2)
    with pytest.raises(ToolFailed, match="qperf: exit 1 after 'tcp_lat:'"):  # report, exit 1
        qperf.parse(captured("qperf_tcp_lat_v6.txt"), "", 1)


def test_qperf_commands():
    spec = TestSpec("r", "rr", duration=1.2, protocol="udp", message_size=64)
    argv = qperf.client_argv(spec, "fd00::2", 19865, 19866)
    assert argv[0] == "qperf" and argv[-2:] == ["fd00::2", "udp_lat"]
    assert argv[argv.index("--time") + 1] == "2"   # whole seconds: -t 0.5 never ends
    assert argv[argv.index("--listen_port") + 1] == "19865"
    assert argv[argv.index("--ip_port") + 1] == "19866"
    assert argv[argv.index("--msg_size") + 1] == "64"
    assert qperf.client_argv(TestSpec("r", "rr"), "10.0.0.2")[-1] == "tcp_lat"
    assert qperf.server_argv(19865) == ["qperf", "--listen_port", "19865"]


# ---------------------------------------------------------------- connrate


def test_connrate_ok():
    m = connrate.parse(captured("connrate_ok.json"))
    assert m.metrics["connections"] == 2957
    assert m.metrics["connections_per_s"] == pytest.approx(2957 / 0.5001561929998388)
    assert m.metrics["failures"] == 0


def test_connrate_all_refused_is_a_failure():
    with pytest.raises(ToolFailed, match="0 connections, 50 failed \\(ECONNREFUSED x50\\)"):
        connrate.parse(captured("connrate_refused.json"))


def test_connrate_usage_error_and_foreign_json():
    with pytest.raises(ToolFailed, match="required: --duration"):
        connrate.parse("", captured("connrate_usage.stderr"), 2)
    with pytest.raises(ToolFailed, match="not a dcnet-connrate result"):
        connrate.parse('{"tool": "other"}')


def test_connrate_commands_are_bounded():
    spec = TestSpec("c", "connrate", duration=2, max_connections=500, timeout=0.5)
    argv = connrate.client_argv(spec, "10.0.0.2", 7100)
    assert argv[1:3] == ["-m", "dcnet.netbench.connprog"]
    assert argv[argv.index("--duration") + 1] == "2"
    assert argv[argv.index("--max") + 1] == "500"
    assert argv[argv.index("--timeout") + 1] == "0.5"


# ---------------------------------------------------------------- /proc/stat, environment


def test_proc_stat_delta_counts_softirq_and_excludes_idle_and_steal():
    before = cpustat.parse(captured("proc_stat_before.txt"))
    after = cpustat.parse(captured("proc_stat_after.txt"))
    assert set(before.cpus) == {"cpu0", "cpu1"}  # the aggregate line is skipped
    seconds = cpustat.delta(before, after, hz=100)
    summary = cpustat.summary(seconds)
    expected_busy = sum(sum(s[k] for k in cpustat.BUSY) for s in seconds.values())
    assert summary["busy_s"] == pytest.approx(expected_busy, abs=1e-3)
    assert summary["softirq_s"] == pytest.approx(
        sum(s["softirq"] for s in seconds.values()), abs=1e-3)
    assert set(summary["per_cpu_busy_s"]) == {"cpu0", "cpu1"}
    wall = sum(sum(s.values()) for s in seconds.values()) / 2
    assert 0.5 < wall < 5  # the two reads were about a second apart


def test_proc_stat_synthetic_delta():
    before = cpustat.parse("cpu0 100 0 50 1000 0 0 10 5 0 0\n")
    after = cpustat.parse("cpu0 150 0 70 1100 0 0 40 25 0 0\n")
    summary = cpustat.summary(cpustat.delta(before, after, hz=100))
    assert summary["busy_s"] == pytest.approx(1.0)  # 50 + 20 + 30 ticks
    assert summary["softirq_s"] == pytest.approx(0.3)
    assert summary["steal_s"] == pytest.approx(0.2)
    with pytest.raises(ValueError):
        cpustat.parse("intr 1 2 3\n")


def test_loadavg_and_cpuinfo_and_offloads():
    assert cpustat.parse_loadavg("4.35 2.93 3.71 3/712 21997\n") == [4.35, 2.93, 3.71]
    cpu = environment.parse_cpuinfo(captured("cpuinfo.txt"))
    assert cpu["logical_cpus"] >= 1 and cpu["model"] != "unknown"
    offloads = environment.parse_offloads(captured("ethtool_k_veth.txt"))
    assert offloads["tcp-segmentation-offload"] == "on"
    assert offloads["generic-receive-offload"] == "off"
    assert offloads["large-receive-offload"] == "off [fixed]"
    assert "tx-checksum-ipv4" not in offloads  # sub-features are not kept


def test_tool_versions_from_captured_output():
    assert first_line(captured("iperf3_version.txt")) == "iperf 3.12 (cJSON 1.7.15)"
    assert first_line(captured("sockperf_version.txt")) == "sockperf, version 3.7-no.git"
    assert first_line(captured("qperf_version.txt")) == "qperf 0.4.11"
    assert first_line("\n\n") == ""
