"""The iperf3 runner: TCP (1 and N streams) and UDP throughput from ``iperf3 -J``.

The parser reads only the JSON document: iperf3 3.12 exits 0 even when it could not
connect or the server was busy, and says so in the document's ``error`` field, which
becomes :class:`ToolFailed`. An IPv6 target (``fd00:...``, ``::1``) adds ``-6`` to the
client, so iperf3 never falls back to another family. Throughput is the receiver's
(``sum_received``); the bytes of every interval, omitted warm-up ones included, are kept
too, because CPU time is sampled over the whole client run.
"""

from __future__ import annotations

import json
from typing import Any

from dcnet.netbench.definition import TestSpec
from dcnet.netbench.tools import Measurement, ToolFailed, require, strip_ansi, version_of

PROGRAM = "iperf3"
PACKAGE = "iperf3"
DEFAULT_PORT = 5201
CONNECT_TIMEOUT_MS = 3000


def check() -> str:
    return require(PROGRAM, PACKAGE)


def version() -> str:
    return version_of([PROGRAM, "--version"])


def server_argv(address: str, port: int = DEFAULT_PORT) -> list[str]:
    """A persistent server bound to ``address``:``port`` (TCP control and data, UDP data)."""
    return [PROGRAM, "-s", "-B", address, "-p", str(port)]


def client_argv(test: TestSpec, address: str, port: int = DEFAULT_PORT) -> list[str]:
    """The client command of a tcp or udp test."""
    argv = [PROGRAM, "-c", address, "-p", str(port), "-J",
            "-t", _seconds(test.duration), "-O", str(test.omit), "-P", str(test.streams),
            "--connect-timeout", str(CONNECT_TIMEOUT_MS)]
    if ":" in address:
        argv.append("-6")
    if test.kind == "udp":
        argv += ["-u", "-b", test.bitrate]
    if test.length:
        argv += ["-l", str(test.length)]
    return argv


def client_timeout(test: TestSpec) -> float:
    """How long the client may take before it is killed: duration, omit and margins."""
    return test.duration + test.omit + CONNECT_TIMEOUT_MS / 1000.0 + 10.0


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def parse(stdout: str, stderr: str = "", returncode: int = 0) -> Measurement:
    """Metrics of one ``iperf3 -c ... -J`` run; ToolFailed with iperf3's own message."""
    document = _document(stdout, stderr, returncode)
    if document.get("error"):
        raise ToolFailed(f"iperf3: {document['error']}")
    start = document.get("start") or {}
    end = document.get("end") or {}
    protocol = (start.get("test_start") or {}).get("protocol", "TCP")
    if protocol == "UDP":
        return _udp(document, end)
    return _tcp(document, end)


def _document(stdout: str, stderr: str, returncode: int) -> dict[str, Any]:
    text = stdout.strip()
    if not text.startswith("{"):
        message = strip_ansi(stderr).strip().splitlines() or strip_ansi(text).splitlines()
        detail = message[-1] if message else f"no output (exit {returncode})"
        if text.startswith("Usage:") and stderr.strip():
            detail = strip_ansi(stderr).strip().splitlines()[0]
        raise ToolFailed(f"iperf3: {detail}")
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ToolFailed(f"iperf3: output is not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise ToolFailed("iperf3: output is not a JSON object")
    return document


def _require(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    value = mapping.get(key)
    if not isinstance(value, dict):
        raise ToolFailed(f"iperf3: result has no '{key}' section")
    return value


def _interval_bytes(document: dict[str, Any]) -> float:
    """Bytes of every interval, omitted warm-up intervals included."""
    total = 0.0
    for interval in document.get("intervals") or []:
        total += float((interval.get("sum") or {}).get("bytes", 0))
    return total


def _cpu(end: dict[str, Any]) -> dict[str, float]:
    cpu = end.get("cpu_utilization_percent") or {}
    return {"client_cpu_pct": float(cpu.get("host_total", 0.0)),
            "server_cpu_pct": float(cpu.get("remote_total", 0.0))}


def _connected(document: dict[str, Any]) -> dict[str, str]:
    """The first data connection's local and remote addresses, as iperf3 reports them
    (the evidence of which address family carried the test)."""
    connected = (document.get("start") or {}).get("connected") or [{}]
    first = connected[0] if isinstance(connected[0], dict) else {}
    return {key: str(first[key]) for key in ("local_host", "remote_host") if key in first}


def _tcp(document: dict[str, Any], end: dict[str, Any]) -> Measurement:
    received = _require(end, "sum_received")
    sent = _require(end, "sum_sent")
    metrics = {
        "gbps": float(received["bits_per_second"]) / 1e9,
        "sent_gbps": float(sent["bits_per_second"]) / 1e9,
        "retransmits": float(sent.get("retransmits", 0)),
        "bytes": float(received["bytes"]),
        "seconds": float(received["seconds"]),
        "run_bytes": _interval_bytes(document),
        **_cpu(end),
    }
    details = {"congestion": end.get("sender_tcp_congestion"),
               "streams": len(end.get("streams") or []),
               "version": (document.get("start") or {}).get("version"),
               **_connected(document)}
    return Measurement(metrics, details)


def _udp(document: dict[str, Any], end: dict[str, Any]) -> Measurement:
    received = end.get("sum_received") or _require(end, "sum")
    sent = end.get("sum_sent") or received
    metrics = {
        "gbps": float(received["bits_per_second"]) / 1e9,
        "sent_gbps": float(sent["bits_per_second"]) / 1e9,
        "loss_pct": float(received.get("lost_percent", 0.0)),
        "jitter_ms": float(received.get("jitter_ms", 0.0)),
        "bytes": float(received["bytes"]),
        "seconds": float(received["seconds"]),
        "run_bytes": _interval_bytes(document),
        **_cpu(end),
    }
    details = {"version": (document.get("start") or {}).get("version"),
               **_connected(document)}
    return Measurement(metrics, details)
