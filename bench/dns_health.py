"""Benchmark of health-driven DNS: from "last real server of a VIP down" to a new answer.

In the lab of :mod:`dcnet.lab.dns_health_lab` (named, HAProxy health-checking one real
server every second with fall 3 / rise 2, and ``elbctl dns follow`` reading HAProxy's
server states as telecom's), each run stops the service's last real server and measures,
from the moment it is stopped:

- *HAProxy marks it down*: until ``show servers state`` says the server is not UP;
- *answer withdrawn*: until a telecom client's ``dig`` gets the default line's VIP;

then starts the server again and measures *HAProxy marks it up* and *answer restored*
(telecom's own VIP again). Queries run back to back (each ``dig`` a few ms). Runs are
repeated per damping setting (the model's ``dns.health``, printed); flap suppression is
switched off for the measurement (``suppress`` and ``max_penalty`` huge), since
repeated runs are flaps by design. Medians, min and max over ``--runs`` runs.
Run as root: ``.venv/bin/python bench/dns_health.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

from dcnet.haproxy.runtime import Runtime
from dcnet.lab.builder import Lab
from dcnet.lab.dns_health_lab import DEFAULT_VIP, TELECOM_VIP, HealthLab, topology
from dcnet.model.dns_health import DNSHealth

NO_SUPPRESS = {"suppress": 1e8, "max_penalty": 1e8}
SETTINGS = {
    "defaults (interval 2 s)": ({}, 2.0),
    "fast (interval 0.5 s)": ({"down_after": 1, "up_after": 2}, 0.5),
}


def server_up(runtime: Runtime) -> bool:
    return any(r.op_state == 2 and r.address != "0.0.0.0" for r in runtime.servers())


def until(env: HealthLab, runtime: Runtime, expected: str, up: bool,
          deadline: float = 120.0) -> tuple[float, float]:
    """(seconds until HAProxy's state is ``up``, seconds until telecom gets ``expected``)."""
    start = time.monotonic()
    marked = None
    while time.monotonic() - start < deadline:
        if marked is None and server_up(runtime) == up:
            marked = time.monotonic() - start
        if env.answer("telecom") == [expected]:
            answered = time.monotonic() - start
            return (answered if marked is None else marked), answered
        time.sleep(0.005)
    raise TimeoutError(f"no {expected} within {deadline}s; log:\n{env.log()[-2000:]}")


def run_setting(health: dict, interval: float, runs: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in (
        "HAProxy marks it down", "answer withdrawn", "HAProxy marks it up",
        "answer restored")}
    with tempfile.TemporaryDirectory(prefix="dcnet-dns-health-") as root, \
            Lab(topology()) as lab:
        env = HealthLab(lab, os.path.join(root, "elb"), {**health, **NO_SUPPRESS},
                        interval=interval)
        runtime = Runtime(env.paths.admin_socket, env.paths.master_socket)
        env.wait_answer("telecom", TELECOM_VIP)
        until(env, runtime, TELECOM_VIP, True)
        for _ in range(runs):
            env.stop_server()
            marked, answered = until(env, runtime, DEFAULT_VIP, False)
            out["HAProxy marks it down"].append(marked)
            out["answer withdrawn"].append(answered)
            env.start_server()
            marked, answered = until(env, runtime, TELECOM_VIP, True)
            out["HAProxy marks it up"].append(marked)
            out["answer restored"].append(answered)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at start; {args.runs} runs "
          "per setting; HAProxy check inter 1 s, fall 3, rise 2")
    for label, (health, interval) in SETTINGS.items():
        cfg = DNSHealth(**{**health, **NO_SUPPRESS})
        print(f"\n{label}: down_after {cfg.down_after:g} s, up_after {cfg.up_after:g} s, "
              f"half_life {cfg.half_life:g} s, flap suppression off")
        figures = run_setting(health, interval, args.runs)
        print(f"    {'step':<24}{'median':>9}{'min':>9}{'max':>9}   (seconds)")
        for step, values in figures.items():
            print(f"    {step:<24}{statistics.median(values):>9.2f}{min(values):>9.2f}"
                  f"{max(values):>9.2f}")
    print(f"\nload average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")


if __name__ == "__main__":
    main()
