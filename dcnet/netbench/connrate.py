"""The connection-rate runner: commands for :mod:`dcnet.netbench.connprog` and its parser.

The rate is successful connections per second of one sequential client (each a full
connect / server close / close life). A run where more than half the attempts failed,
or that made no connection at all, is a failure naming the errors seen.
"""

from __future__ import annotations

import json
import sys

from dcnet.netbench.definition import TestSpec
from dcnet.netbench.tools import Measurement, ToolFailed

PORT = 7100
MODULE = "dcnet.netbench.connprog"


def check() -> str:
    return sys.executable


def version() -> str:
    return f"dcnet connprog 1 (python {sys.version.split()[0]})"


def server_argv(address: str, port: int = PORT) -> list[str]:
    return [sys.executable, "-m", MODULE, "server", "--host", address, "--port", str(port)]


def client_argv(test: TestSpec, address: str, port: int = PORT) -> list[str]:
    return [sys.executable, "-m", MODULE, "client", "--host", address, "--port", str(port),
            "--duration", f"{test.duration:g}", "--max", str(test.max_connections),
            "--timeout", f"{test.timeout:g}"]


def client_timeout(test: TestSpec) -> float:
    return test.duration + test.timeout + 20.0


def parse(stdout: str, stderr: str = "", returncode: int = 0) -> Measurement:
    lines = [line for line in stdout.splitlines() if line.strip()]
    if returncode != 0 or not lines:
        detail = (stderr.strip().splitlines() or [f"no output (exit {returncode})"])[-1]
        raise ToolFailed(f"connrate: {detail}")
    try:
        result = json.loads(lines[-1])
    except ValueError as exc:
        raise ToolFailed(f"connrate: output is not JSON ({exc})") from None
    if not isinstance(result, dict) or result.get("tool") != "dcnet-connrate":
        raise ToolFailed("connrate: output is not a dcnet-connrate result")
    connections = int(result["connections"])
    failures = {str(k): int(v) for k, v in (result.get("failures") or {}).items()}
    failed = sum(failures.values())
    seconds = float(result["seconds"])
    if connections == 0 or failed > connections:
        errors = ", ".join(f"{name} x{count}" for name, count in sorted(failures.items()))
        raise ToolFailed(f"connrate: {connections} connections, {failed} failed "
                         f"({errors or 'no error recorded'})")
    metrics = {"connections_per_s": connections / seconds if seconds > 0 else 0.0,
               "connections": float(connections), "failures": float(failed),
               "seconds": seconds}
    details: dict = {"failures": failures}
    if result.get("family"):
        details["address_family"] = str(result["family"])
    return Measurement(metrics, details)
