"""Benchmark of carrier-aware DNS: render + check cost, and apply-to-answer time.

For a synthetic model of N services x 4 carriers (3 carrier views with 500 client
prefixes each, plus the default view), it measures, R times each, medians printed:

- model load, layout + jinja2 render, named-checkzone (every zone file),
  named-checkconf -z (parses named.conf and loads every zone), and the total;
- apply to answer: a real named in a lab namespace serves the rendered files; one
  service's telecom VIP changes; the time from the start of apply (one locked session
  of the ``dns`` target, as ``elbctl apply --target dns``: plan = read, render, checks;
  then install; ``rndc reload ZONE IN VIEW``) until a telecom client's dig returns the
  new VIP, and the part of it after the checks (install + reload + first answer).

It prints the baseline (``--baseline`` services, default 1,000) and the full size
(``--services``, default 10,000) side by side with their ratio, and the cost of
rendering relative to named-checkconf. Run as root: ``.venv/bin/python bench/dns_render.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml
from synthetic import CARRIERS, PREFIXES, write_model  # bench/ sibling

from dcnet.dns import bind
from dcnet.dns.backend import DNSTarget
from dcnet.dns.layout import layout
from dcnet.dns.output import render_to_directory
from dcnet.dns.render import render
from dcnet.dns.settings import from_env
from dcnet.lab.builder import Lab
from dcnet.lab.dns_lab import dig, make_rndc_key, start_named
from dcnet.model import load_model
from dcnet.target import apply_plan, make_plan

CLIENT = ("100.64.0.1", "100.64.0.2")     # dns server, telecom client (in telecom's list)


def timed(fn, *args):
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def render_model(model, options):
    return render(layout(model), options, source="bench")


def measure_render(model_path: Path, repeats: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in (
        "model load", "layout + render", "named-checkzone", "named-checkconf -z",
        "render + check total")}
    for _ in range(repeats):
        t_load, model = timed(load_model, model_path)
        with tempfile.TemporaryDirectory() as tmp:
            make_rndc_key(tmp)
            options = from_env(env={}, directory=tmp).server
            t_render, bundle = timed(render_model, model, options)
            conf = bind.write_bundle(bundle, tmp)
            t_zone, _ = timed(bind.check_zone_files, bundle, tmp)
            t_conf, _ = timed(bind.check_conf, conf)
        for key, value in zip(out, (t_load, t_render, t_zone, t_conf,
                                    t_render + t_zone + t_conf), strict=True):
            out[key].append(value)
    return out


def measure_apply(model_path: Path, repeats: int) -> dict[str, list[float]]:
    topology = {"hosts": ["dns", "cli"], "links": [
        {"a": {"host": "dns", "ifname": "eth0", "addresses": [f"{CLIENT[0]}/24"]},
         "b": {"host": "cli", "ifname": "eth0", "addresses": [f"{CLIENT[1]}/24"]}}]}
    out: dict[str, list[float]] = {"apply -> new answer": [], "after checks -> new answer": []}
    data = yaml.safe_load(model_path.read_text())
    name = f"s0.c0.p0.o.{data['dns']['zone']}"
    with tempfile.TemporaryDirectory(prefix="dcnet-bench-bind-") as bind_dir, \
            Lab(topology) as lab:
        settings = from_env(env={}, directory=bind_dir, netns=lab.netns("dns"))
        make_rndc_key(bind_dir)
        render_to_directory(load_model(model_path), settings.server)
        start_named(lab, "dns", bind_dir, DNSTarget(directory=bind_dir, netns=settings.netns).rndc,
                    timeout=120)
        for r in range(repeats):
            vip = f"172.16.250.{r + 1}"
            data["services"][0]["vips"]["telecom"] = vip
            model_path.write_text(yaml.safe_dump(data, sort_keys=False))
            model = load_model(model_path)
            # as one ``elbctl apply --target dns`` session: lock, plan, apply
            target = DNSTarget(directory=bind_dir, netns=settings.netns)
            with target.lock():
                start = time.perf_counter()
                plan = make_plan(target, model)
                checked = time.perf_counter()
                result = apply_plan(target, plan)
            if not result.ok:
                raise SystemExit(result.to_text())
            while dig(lab, "cli", CLIENT[0], name) != [vip]:
                time.sleep(0.001)
            done = time.perf_counter()
            out["apply -> new answer"].append(done - start)
            out["after checks -> new answer"].append(done - checked)
    return out


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (apply-to-answer starts named in a network namespace)")
    results = {}
    for size in (args.baseline, args.services):
        with tempfile.TemporaryDirectory(prefix="dcnet-bench-model-") as tmp:
            path = write_model(Path(tmp), size)
            results[size] = {**measure_render(path, args.repeats),
                             **measure_apply(path, args.repeats)}
    base, full = results[args.baseline], results[args.services]
    print(f"dns_render: {len(CARRIERS)} carriers ({PREFIXES} client prefixes per carrier "
          f"list), medians of {args.repeats} runs; {platform.node()} {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    print(f"{'step':<28}{args.baseline:>10,} svc{args.services:>10,} svc{'ratio':>9}")
    for key in full:
        b, f = median_ms(base[key]), median_ms(full[key])
        print(f"{key:<28}{b:>11.0f} ms{f:>11.0f} ms{f / b:>8.1f}x")
    conf, zone = median_ms(full["named-checkconf -z"]), median_ms(full["named-checkzone"])
    share = (zone + conf) / median_ms(full["render + check total"])
    print(f"at {args.services:,} services: layout + render = "
          f"{median_ms(full['layout + render']) / conf:.2f}x named-checkconf -z; "
          f"named-checkzone = {zone / conf:.2f}x; the checks are {share:.0%} of render + check")


if __name__ == "__main__":
    main()
