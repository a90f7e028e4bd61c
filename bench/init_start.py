"""Benchmark: dcnet-init's start-up and memory beside tini and dumb-init (Debian).

For each init, runs ``INIT -- true`` (an app that exits at once) many times,
interleaved (tini, dumb-init, dcnet-init, then again), and measures the wall time from
spawn to exit (the whole start-up and shutdown cost of the init) and the peak RSS of
the init process (GNU time's %M around ``INIT -- sleep 0.2``). Also the time
dcnet-init takes from spawn to "healthy" for an app that listens at once (TCP check,
interval 0.01 s): what the health check and the hooks add to an app's start; and the
time until the app itself accepts, alone, under tini, under dcnet-init without hooks and
with a check and a slow (300 ms) start hook, interleaved: the hooks must not delay it.

    .venv/bin/python bench/init_start.py [--runs 30]

Prints medians and p90, and ratios to tini. Noisy shared machine: compare ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

INITS = {
    "tini": [shutil.which("tini") or "tini", "--"],
    "dumb-init": [shutil.which("dumb-init") or "dumb-init", "--"],
    "dcnet-init": [os.path.join(os.path.dirname(sys.executable), "dcnet-init"), "--"],
}


def once(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def peak_rss_kib(argv: list[str]) -> int:
    """GNU time's %M (the init's peak RSS; the app is ``sleep 0.2``, smaller). Through
    GNU time, not wait4 from here: a child forked from this Python starts with its RSS."""
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], capture_output=True,
                          text=True, check=True)
    return int(proc.stderr.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_to_healthy() -> float:
    app_port, health_port = free_port(), free_port()
    app = (f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{app_port})); "
           "s.listen(); time.sleep(30)")
    start = time.perf_counter()
    proc = subprocess.Popen([*INITS["dcnet-init"][:-1], "--check", f"tcp:{app_port}",
                             "--interval", "0.01", "--health-port", str(health_port),
                             "--health-address", "127.0.0.1", "--on-start", "true", "--",
                             sys.executable, "-c", app],
                            stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - start < 30:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/health",
                                            timeout=1):
                    return time.perf_counter() - start
            except (urllib.error.URLError, OSError):
                time.sleep(0.002)
        raise RuntimeError("never healthy")
    finally:
        proc.terminate()
        proc.wait()


def app_start(prefix: tuple[str, ...] = ()) -> float:
    """The app to the moment it accepts, alone (the floor) or under ``prefix`` (an init
    and its options, ending with ``--``)."""
    port = free_port()
    app = (f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); "
           "s.listen(); time.sleep(30)")
    start = time.perf_counter()
    proc = subprocess.Popen([*prefix, sys.executable, "-c", app], stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return time.perf_counter() - start
            except OSError:
                time.sleep(0.002)
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    walls: dict[str, list[float]] = {n: [] for n in INITS}
    rss: dict[str, list[int]] = {n: [] for n in INITS}
    for i in range(args.runs):
        names = list(INITS)
        names = names[i % 3:] + names[:i % 3]
        for name in names:
            walls[name].append(once([*INITS[name], "true"]))
            if i < 5:
                rss[name].append(peak_rss_kib([*INITS[name], "sleep", "0.2"]))
    base = statistics.median(walls["tini"])
    print(f"{'init':<12} {'start+exit median':>18} {'p90':>9} {'ratio':>7} {'peak RSS':>10}")
    for name in INITS:
        w = sorted(walls[name])
        med = statistics.median(w)
        p90 = w[int(0.9 * (len(w) - 1))]
        print(f"{name:<12} {med * 1000:>15.1f} ms {p90 * 1000:>6.1f} ms {med / base:>6.1f}x "
              f"{statistics.median(rss[name]) / 1024:>7.1f} MiB")
    healthy = [time_to_healthy() for _ in range(max(5, args.runs // 3))]
    alone = [app_start() for _ in range(max(5, args.runs // 3))]
    h, a = statistics.median(healthy), statistics.median(alone)
    print(f"app accepting alone: {a * 1000:.1f} ms; under dcnet-init to healthy (check "
          f"interval 10 ms, start hook run): {h * 1000:.1f} ms (+{(h - a) * 1000:.1f} ms)")
    init = INITS["dcnet-init"][:-1]
    variants = {"alone": (), "tini": tuple(INITS["tini"]),
                "dcnet-init, no hooks": (*init, "--"),
                "dcnet-init, TCP check + a 300 ms start hook": (
                    *init, "--check", "tcp:1", "--interval", "0.01", "--on-start",
                    "sleep 0.3", "--")}
    accepting: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(max(5, args.runs // 3)):
        names = list(variants)[i % len(variants):] + list(variants)[:i % len(variants)]
        for name in names:
            accepting[name].append(app_start(variants[name]))
    print("app accepting (spawn to first accepted connection; hooks run after the check "
          "passes, so they must not move it):")
    floor = statistics.median(accepting["alone"])
    for name, values in accepting.items():
        med = statistics.median(values)
        print(f"  {name:<46} {med * 1000:7.1f} ms  ({med / floor:.2f}x alone)")


if __name__ == "__main__":
    main()
