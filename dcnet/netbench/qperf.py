"""The qperf runner: mean request/response latency over IPv4 and IPv6 (test kind ``rr``).

``qperf`` (Debian 12 main, 0.4.11) runs ``tcp_lat`` / ``udp_lat``: a ping-pong of
``message_size`` bytes for whole seconds, reporting the **mean one-way latency** (half
the mean round trip, the same convention as sockperf's) and no percentiles. It takes
IPv6 addresses, unlike Debian 12's sockperf 3.7, so it gives the latency figure over
both families with one tool (sockperf keeps the IPv4 percentiles of the ``latency``
kind). The server (``qperf -lp PORT``) has no bind option: it listens on every address
of its namespace (one dual-stack socket), and the data socket of each test goes to the
port the client names with ``-ip``; the client's target address picks the family.

qperf exits 0 on some failures: a ``udp_lat`` whose replies never came back prints
``latency = 0 ns`` and no received messages; so a run counts only with a latency above
zero and received messages. Connection and name errors (``<host>: failed to connect``,
``getaddrinfo failed: ...``) exit 1 and are kept as the failure's message. ``-t`` takes
whole seconds only (``-t 0.5`` never ends), so durations are rounded up.
"""

from __future__ import annotations

import math
import re

from dcnet.netbench.definition import TestSpec
from dcnet.netbench.tools import Measurement, ToolFailed, first_line, require, version_of

PROGRAM = "qperf"
PACKAGE = "qperf"
LISTEN_PORT = 19765
DATA_PORT = 19766
PRECISION = 6
TESTS = {"tcp": "tcp_lat", "udp": "udp_lat"}

_FIELD = re.compile(r"^\s+(\w+)\s+=\s+([0-9.,]+)\s*(\S*)\s*$")
_HEADER = re.compile(r"^(tcp_lat|udp_lat):\s*$")
_TIME_UNITS = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "sec": 1e6}
_RATE_UNITS = {"/sec": 1.0, "K/sec": 1e3, "M/sec": 1e6, "G/sec": 1e9}


def check() -> str:
    return require(PROGRAM, PACKAGE)


def version() -> str:
    return version_of([PROGRAM, "--version"])


def server_argv(port: int = LISTEN_PORT) -> list[str]:
    """The qperf server on listen port ``port`` (all addresses of its namespace)."""
    return [PROGRAM, "--listen_port", str(port)]


def client_argv(test: TestSpec, address: str, port: int = LISTEN_PORT,
                data_port: int = DATA_PORT) -> list[str]:
    return [PROGRAM, "--listen_port", str(port), "--ip_port", str(data_port),
            "--time", str(max(1, math.ceil(test.duration))),
            "--msg_size", str(test.message_size), "--precision", str(PRECISION),
            "-vvs", "-vu", address, TESTS[test.protocol]]


def client_timeout(test: TestSpec) -> float:
    return math.ceil(test.duration) + 15.0


def fields(text: str) -> tuple[str | None, dict[str, tuple[float, str]], list[str]]:
    """The test name, its ``name = value unit`` fields and the lines that are neither."""
    test, found, other = None, {}, []
    for line in text.splitlines():
        header, field = _HEADER.match(line), _FIELD.match(line)
        if header:
            test = header.group(1)
        elif field:
            found[field.group(1)] = (float(field.group(2).replace(",", "")), field.group(3))
        elif line.strip():
            other.append(line.strip())
    return test, found, other


def parse(stdout: str, stderr: str = "", returncode: int = 0) -> Measurement:
    """Mean one-way latency (microseconds) and round trips per second of one run."""
    test, found, other = fields(stdout + "\n" + stderr)
    if returncode != 0 or "latency" not in found:
        said = first_line(stdout + stderr)
        detail = other[0] if other else (f"exit {returncode} after {said!r}" if said
                                         else f"no output (exit {returncode})")
        raise ToolFailed(f"qperf: {detail}")
    value, unit = found["latency"]
    if unit not in _TIME_UNITS:
        raise ToolFailed(f"qperf: unknown latency unit {unit!r}")
    received = int(found.get("loc_recv_msgs", (0.0, ""))[0])
    sent = int(found.get("loc_send_msgs", (0.0, ""))[0])
    if value <= 0 or received == 0:
        raise ToolFailed(f"qperf: no reply came back ({sent} sent, {received} received, "
                         f"latency {value:g} {unit})")
    mean_us = value * _TIME_UNITS[unit]
    details: dict[str, object] = {"test": test, "sent": sent, "received": received}
    if "time" in found:
        details["time_s"] = found["time"][0]
    if "msg_size" in found:
        details["message_size"] = int(found["msg_size"][0])
    if "msg_rate" in found and found["msg_rate"][1] in _RATE_UNITS:
        rate, rate_unit = found["msg_rate"]
        details["messages_per_s"] = rate * _RATE_UNITS[rate_unit]
    return Measurement({"mean_us": mean_us, "round_trips_per_s": 1e6 / (2.0 * mean_us)},
                       details)
