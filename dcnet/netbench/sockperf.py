"""The sockperf runner: request/response latency percentiles from ``sockperf ping-pong``.

sockperf reports one-way latency (half the round trip) over the samples after its own
warm-up, with percentiles in its summary; that summary is what the parser reads.
sockperf 3.7 exits 0 even when it cannot connect, so failure is recognised from its
``ERROR:`` / ``Invalid`` lines or from a summary without percentiles. With ``keep_raw``
the client also writes every message's latency (``--full-log``), kept gzip'ed beside
the results: the reference method keeps raw samples and never averages percentiles.
sockperf 3.7 (Debian 12) refuses IPv6 addresses (``'-i' Invalid address: ::1``); IPv6
came with sockperf 3.8, so :func:`ipv6_unsupported` says why latency over IPv6 is skipped
with the installed version; the ``rr`` kind (:mod:`dcnet.netbench.qperf`) gives a mean
latency over both families instead.
"""

from __future__ import annotations

import math
import re

from dcnet.netbench.definition import TestSpec
from dcnet.netbench.tools import Measurement, ToolFailed, require, strip_ansi, version_of

PROGRAM = "sockperf"
PACKAGE = "sockperf"
TCP_PORT = 11111
UDP_PORT = 11112
IPV6_SINCE = (3, 8)

_PERCENTILE = re.compile(r"--->\s+percentile\s+([0-9.]+)\s*=\s*([0-9.]+)")
_MAX = re.compile(r"--->\s+<MAX> observation\s*=\s*([0-9.]+)")
_MIN = re.compile(r"--->\s+<MIN> observation\s*=\s*([0-9.]+)")
_AVG = re.compile(r"avg-latency=([0-9.]+)\s*\(std-dev=([0-9.]+)\)")
_VALID = re.compile(r"\[Valid Duration\]\s*RunTime=([0-9.]+) sec; SentMessages=(\d+); "
                    r"ReceivedMessages=(\d+)")
_DROPPED = re.compile(r"# dropped messages = (\d+)")
_ERROR = re.compile(r"(ERROR:.*|.*Invalid .*)")
WANTED = {"50.000": "p50_us", "90.000": "p90_us", "99.000": "p99_us", "99.900": "p999_us"}


def check() -> str:
    return require(PROGRAM, PACKAGE)


def version() -> str:
    return version_of([PROGRAM, "--version"])


def ipv6_unsupported(version_text: str) -> str | None:
    """Why this sockperf (its ``--version`` text) cannot measure over IPv6, or None."""
    match = re.search(r"version\s+(\d+)\.(\d+)", version_text)
    if match is None:
        return None
    found = (int(match.group(1)), int(match.group(2)))
    if found >= IPV6_SINCE:
        return None
    return (f"sockperf {found[0]}.{found[1]} cannot use IPv6 addresses ('-i ::1': Invalid "
            f"address); IPv6 came with sockperf {IPV6_SINCE[0]}.{IPV6_SINCE[1]}; a test of kind "
            f"rr (qperf, mean latency) measures both families")


def port_for(test: TestSpec) -> int:
    return TCP_PORT if test.protocol == "tcp" else UDP_PORT


def server_argv(address: str, protocol: str, port: int) -> list[str]:
    argv = [PROGRAM, "server", "-i", address, "-p", str(port)]
    return [*argv, "--tcp"] if protocol == "tcp" else argv


def client_argv(test: TestSpec, address: str, port: int,
                full_log: str | None = None) -> list[str]:
    argv = [PROGRAM, "ping-pong", "-i", address, "-p", str(port),
            "-t", str(max(1, math.ceil(test.duration))), "-m", str(test.message_size)]
    if test.protocol == "tcp":
        argv.append("--tcp")
    if full_log:
        argv += ["--full-log", full_log]
    return argv


def client_timeout(test: TestSpec) -> float:
    return math.ceil(test.duration) + 15.0


def parse(stdout: str, stderr: str = "", returncode: int = 0) -> Measurement:
    """Percentiles (microseconds) and the round-trip rate of one ping-pong run."""
    text = strip_ansi(stdout + "\n" + stderr)
    percentiles = {}
    for match in _PERCENTILE.finditer(text):
        percentiles[match.group(1)] = float(match.group(2))
    valid = _VALID.search(text)
    if not percentiles or valid is None:
        errors = [m.group(1).strip() for m in _ERROR.finditer(text)]
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        detail = errors[0] if errors else (lines[-1] if lines else f"no output (exit "
                                                                   f"{returncode})")
        raise ToolFailed(f"sockperf: {detail.removeprefix('sockperf: ')}")
    missing = [key for key in WANTED if key not in percentiles]
    if missing:
        raise ToolFailed(f"sockperf: summary lacks percentiles {', '.join(missing)}")
    runtime, sent, received = float(valid.group(1)), int(valid.group(2)), int(valid.group(3))
    metrics = {name: percentiles[key] for key, name in WANTED.items()}
    average = _AVG.search(text)
    maximum, minimum, dropped = _MAX.search(text), _MIN.search(text), _DROPPED.search(text)
    metrics.update({
        "avg_us": float(average.group(1)) if average else math.nan,
        "max_us": float(maximum.group(1)) if maximum else math.nan,
        "min_us": float(minimum.group(1)) if minimum else math.nan,
        "round_trips_per_s": received / runtime if runtime > 0 else 0.0,
        "dropped": float(dropped.group(1)) if dropped else 0.0,
    })
    return Measurement(metrics, {"sent": sent, "received": received, "runtime_s": runtime})


def parse_full_log(text: str) -> list[float]:
    """Per-message latencies (microseconds) from a ``--full-log`` CSV file."""
    latencies: list[float] = []
    in_rows = False
    for line in text.splitlines():
        if line.startswith("packet,"):
            in_rows = True
            continue
        if not in_rows or not line.strip() or line.startswith("-"):
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 4:
            raise ToolFailed(f"sockperf: unexpected full-log row {line!r}")
        latencies.append(float(fields[3]))
    if not in_rows:
        raise ToolFailed("sockperf: full log has no 'packet,' header")
    return latencies
