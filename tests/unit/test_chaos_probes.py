"""Chaos probes: the latency percentiles of a window (records with durations) and the
tcp probe (a connect to a loopback listener, ok; to a closed port, failed), and the
schema of a tcp probe."""

from __future__ import annotations

import socket

import pytest

from dcnet.chaos.experiment import ExperimentError, Probe, loads
from dcnet.chaos.probes import TcpProbe, percentile, window


def test_window_latency_of_successful_requests_only():
    records = [(0.1, True, 0.010), (0.2, True, 0.030), (0.3, False, 1.0), (0.4, True, 0.020)]
    w = window(records, 0.0, 1.0)
    assert w["latency_p50_ms"] == 20.0 and w["latency_p99_ms"] == pytest.approx(29.8)
    assert window(records, 0.25, 0.35)["latency_p50_ms"] is None     # only a failure
    assert "latency_p50_ms" not in window([(0.1, True)], 0.0, 1.0)   # no durations


def test_percentile_is_linear_between_ranks():
    assert percentile([1.0], 99) == 1.0
    assert percentile([0.0, 10.0], 50) == 5.0
    assert percentile(list(map(float, range(101))), 99) == 99.0


def test_tcp_probe_connects():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        probe = TcpProbe(Probe("t", "x", url=f"127.0.0.1:{port}", kind="tcp", timeout=1))
        assert probe.one()
    assert not probe.one()                                 # closed: refused


def test_tcp_probe_schema():
    text = ("chaos: 1\nname: x\nnamespaces: [a]\nprobes:\n"
            "  - {name: t, namespace: a, kind: tcp, address: 'ADDR'}\n"
            "method:\n  - {pause: 1}\n")
    [probe] = loads(text.replace("ADDR", "10.0.0.1:80")).probes
    assert probe.kind == "tcp" and probe.url == "10.0.0.1:80"
    with pytest.raises(ExperimentError) as exc:
        loads(text.replace("ADDR", "http://10.0.0.1/"))
    assert "address" in str(exc.value.problems[0]), exc.value.problems
