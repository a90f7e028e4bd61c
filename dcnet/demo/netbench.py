"""The netbench step of ``dcnet-demo``: a few-second run comparing modes, with its table.

It runs the shipped ``demo`` definition (veth, bridge, host-gw and VXLAN over IPv4 and
IPv6, one second of single-stream TCP each) in its own namespaces, prints the ratio
table of the report and checks that every sample succeeded and nothing was left
behind. One round proves nothing about the modes; ``netbench run modes`` is the real measurement.
"""

from __future__ import annotations

import shutil
import tempfile

import click

from dcnet.netbench import definition, engine, report, results, summary


def demo(model, lab, report_) -> None:
    """The demo hook: ``model`` and ``lab`` (the ELB lab) are not used."""
    report_.section("netbench: four modes over IPv4 and IPv6, one second of TCP each "
                    "(netbench run demo)")
    loaded = definition.load(definition.builtin("demo"))
    out_dir = tempfile.mkdtemp(prefix="dcnet-netbench-demo-")
    try:
        outcome = engine.run(loaded, out_dir)
        data = results.load(outcome.path)
        for line in report.ratio_table(data, summary.figures(data))[4:]:
            click.echo(f"    {line}")
        failed = [s for s in data["samples"] if not s["ok"]]
        report_.check(outcome.state == "complete" and not failed and not outcome.failed_modes,
                      f"{len(data['samples'])} samples on {len(loaded.modes)} modes, "
                      f"{len(failed)} failed")
        left = data["run"]["teardown"]["namespaces_left"]
        report_.check(not left, f"{data['run']['teardown']['namespaces_checked']} benchmark "
                                f"namespaces removed" + (f"; left: {left}" if left else ""))
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
