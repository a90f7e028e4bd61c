"""Benchmark: render and validate 5,000 services, and find one bad service among them.

dcnet renders the whole file and runs ``haproxy -c`` once (a bad service is then found
from HAProxy's line numbers, or by bisection). The baseline is marathon-lb's fix for one
bad app blocking everyone: one ``haproxy -c`` per service; it is timed on a sample and
scaled to all services (said so in the output). Prints medians and ratios side by side.

    .venv/bin/python bench/haproxy_render.py [--services 5000] [--runs 3] [--sample 40]
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import statistics
import tempfile
import time

from dcnet.haproxy.check import render_valid, run_check
from dcnet.haproxy.paths import Paths
from dcnet.haproxy.render import render
from dcnet.lab import haproxy_lab as hlab
from dcnet.model import JobName

PATHS = Paths(run_dir="/run/dcnet-haproxy-bench")


def big_model(services: int, folder: str | None = None, bad: str | None = None):
    """``services`` services, each on its own VIP:port, built from one loaded service
    (loading 5,000 services through the YAML loader is not what is measured here)."""
    data = hlab.model_data({hlab.server_address(i): i for i in range(1, 4)})
    del data["haproxy"]["listen"]           # each service binds its own VIP
    data["carriers"][0]["vip_ranges"] = ["203.0.112.0/22"]
    source = "<bench>"
    if folder:
        os.makedirs(os.path.join(folder, "t"), exist_ok=True)
        with open(os.path.join(folder, "t", f"{bad}.cfg.j2"), "w") as handle:
            handle.write('{% extends "builtin/service.cfg.j2" %}{% block backend_options %}'
                         "\n    frobnicate yes{% endblock %}")
        data["haproxy"]["templates"] = "t"
        source = os.path.join(folder, "m.yaml")
    model = hlab.model_of(data, source)
    first = model.services[0]
    copies = []
    for n in range(services):
        vip = ipaddress.ip_address("203.0.112.1") + n % 1000
        copies.append(dataclasses.replace(
            first, job=JobName.parse(hlab.job_name(n)), vips=(("bgp", vip),),
            ports=(dataclasses.replace(first.ports[0], port=1000 + n),)))
    return dataclasses.replace(model, services=tuple(copies))


def timed(func, runs: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(runs):
        start = time.perf_counter()
        value = func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sample", type=int, default=40)
    args = parser.parse_args()
    n = args.services
    model = big_model(n)
    t_render, rendered = timed(lambda: render(model, PATHS), args.runs)
    t_check, outcome = timed(lambda: run_check(rendered.text), args.runs)
    assert outcome.ok, outcome.alerts
    t_all, _ = timed(lambda: render_valid(model, PATHS), args.runs)

    one = big_model(1)
    t_one, _ = timed(lambda: run_check(render(one, PATHS).text), args.sample)
    baseline_all = t_one * n

    with tempfile.TemporaryDirectory() as folder:
        bad = hlab.job_name(n * 2 // 3)
        broken = big_model(n, folder, bad)
        t_bad, checked = timed(lambda: render_valid(broken, PATHS), args.runs)
        assert list(checked.bad) == [bad], checked.bad

    lines = [f"HAProxy render + validate, {n} services ({len(rendered.text) // 1024} KiB file); "
             f"medians of {args.runs} runs",
             f"{'':44}{'dcnet':>12}{'baseline':>14}{'ratio':>9}",
             f"{'render (jinja2)':44}{t_render:>11.2f}s{'':>14}",
             f"{'haproxy -c on the whole file':44}{t_check:>11.2f}s{'':>14}",
             f"{'render + validate, all good':44}{t_all:>11.2f}s{baseline_all:>13.1f}s"
             f"{baseline_all / t_all:>8.0f}x",
             f"{'find 1 bad service among all':44}{t_bad:>11.2f}s{baseline_all:>13.1f}s"
             f"{baseline_all / t_bad:>8.0f}x",
             f"{'haproxy -c runs to find it':44}{checked.checks:>12}{n:>14}"
             f"{n / checked.checks:>8.0f}x",
             f"baseline: one haproxy -c per service (marathon-lb); {t_one * 1000:.0f} ms median "
             f"per check over {args.sample} single-service files, times {n}"]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
