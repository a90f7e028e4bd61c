"""``netbench``: build network modes in namespaces, measure them, report and compare runs.

    netbench run DEF -o DIR      run a definition (a path, or a shipped name: modes, quick)
    netbench report DIR          DIR/report.md and PNG plots from DIR/results.json
                                 (--baseline MODE: ratios to another mode; -o OUT)
    netbench compare A B         run B against run A: ratios, intervals, significance
    netbench modes               the modes known and whether each can run here

Exit codes: 0 done; 1 refused input (a bad definition or results file: one line naming
file, line and field) or a mode failed to build or samples failed (results still
written); 2 usage (not root, a missing tool); 130 interrupted (results written).
"""

from __future__ import annotations

import os
import sys

import click

from dcnet.netbench import catalogue, definition, engine, report, results
from dcnet.netbench.progress import Progress
from dcnet.netbench.tools import ToolMissing

CONTEXT = {"help_option_names": ["-h", "--help"]}


@click.group(context_settings=CONTEXT)
def cli() -> None:
    """Measure throughput, latency, connection rate and CPU cost of network modes."""


@cli.command("run")
@click.argument("definition_path", metavar="DEF")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory: results.json, logs/, raw/ (created if missing).")
@click.option("--no-progress", is_flag=True, help="No progress bar, only the summary.")
@click.option("--report/--no-report", "make_report", default=True,
              help="Write DIR/report.md and the plots after the run (default: yes).")
def run_command(definition_path: str, out_dir: str, no_progress: bool,
                make_report: bool) -> None:
    """Build every mode of DEF, run its tests, write DIR/results.json."""
    if os.geteuid() != 0:
        click.echo("netbench run: needs root (network namespaces)", err=True)
        sys.exit(2)
    try:
        loaded = definition.load(definition.resolve(definition_path))
        engine.check_tools(loaded)
    except definition.DefinitionError as exc:
        click.echo(f"netbench: {exc}", err=True)
        sys.exit(1)
    except ToolMissing as exc:
        click.echo(f"netbench: {exc}", err=True)
        sys.exit(2)
    progress = Progress(0, enabled=not no_progress)
    outcome = engine.run(loaded, out_dir, progress, command=sys.argv)
    data = results.load(outcome.path)
    failed = [s for s in data["samples"] if not s["ok"]]
    click.echo(f"netbench: run {outcome.state}: {len(data['samples'])} samples "
               f"({len(failed)} failed) in {outcome.path}")
    if make_report and data["samples"]:
        click.echo(f"netbench: report {report.write(data, out_dir)}")
    if outcome.state == "interrupted":
        sys.exit(130)
    if outcome.failed_modes or failed:
        sys.exit(1)


@cli.command("report")
@click.argument("run_dir", type=click.Path(exists=True))
@click.option("--no-plots", is_flag=True, help="Markdown only.")
@click.option("--stdout", "to_stdout", is_flag=True, help="Also print the Markdown.")
@click.option("--baseline", default=None, metavar="MODE",
              help="Ratios to this mode instead of the definition's baseline.")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write report.md and the plots here (default: beside results.json).")
def report_command(run_dir: str, no_plots: bool, to_stdout: bool, baseline: str | None,
                   out_dir: str | None) -> None:
    """Write RUN_DIR/report.md (and PNG plots) from RUN_DIR/results.json."""
    try:
        data = results.load(run_dir)
    except results.ResultsError as exc:
        click.echo(f"netbench: {exc}", err=True)
        sys.exit(1)
    directory = out_dir or (run_dir if os.path.isdir(run_dir)
                            else os.path.dirname(run_dir) or ".")
    try:
        path = report.write(data, directory, with_plots=not no_plots, baseline=baseline)
    except ValueError as exc:
        click.echo(f"netbench: {exc}", err=True)
        sys.exit(2)
    if to_stdout:
        with open(path) as handle:
            click.echo(handle.read())
    click.echo(f"netbench: wrote {path}", err=True)


@cli.command("compare")
@click.argument("run_a", type=click.Path(exists=True))
@click.argument("run_b", type=click.Path(exists=True))
@click.option("--min-effect", type=click.FloatRange(0.0, 1.0), default=None,
              help="Smallest relative difference called significant (default: B's "
                   "definition, 0.05).")
def compare_command(run_a: str, run_b: str, min_effect: float | None) -> None:
    """Compare run B against run A (each a run directory or results.json)."""
    from dcnet.netbench import compare

    try:
        a, b = results.load(run_a), results.load(run_b)
    except results.ResultsError as exc:
        click.echo(f"netbench: {exc}", err=True)
        sys.exit(1)
    click.echo(compare.render(a, b, min_effect))


@cli.command("modes")
def modes_command() -> None:
    """List the modes and whether each can run on this machine."""
    from dcnet.netbench import modes

    for mode in catalogue.MODES:
        reason = modes.unavailable(mode.name)
        state = "available" if reason is None else f"unavailable: {reason}"
        click.echo(f"{mode.name:<18} {mode.title} ({state})")


def main() -> None:
    cli(prog_name="netbench")


if __name__ == "__main__":
    main()
