"""``netbench run``: build the modes, run the schedule, write results, always tear down.

Order of work: check that the tools the tests need exist (before anything is built);
record the environment; build every mode of the definition on one ExitStack (a mode
that cannot run here is recorded ``unavailable`` with the reason, one whose build fails
is recorded ``failed`` and the run goes on without it); start the servers each mode
needs; run the shuffled, interleaved schedule, writing the result file after every
sample; then unwind the stack (CNI DEL, servers, labs) and check that no namespace of
the run is left. Ctrl-C and SIGTERM (turned into KeyboardInterrupt while a run is live)
stop the schedule, tear everything down and still write what was measured, with the run
state ``interrupted``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dcnet.netbench import catalogue, environment, modes, sampler, schedule
from dcnet.netbench.definition import Definition
from dcnet.netbench.live import LiveMode
from dcnet.netbench.progress import Progress, headline
from dcnet.netbench.results import ResultFile
from dcnet.sysio import netns, proc

MIN_REPEATS_FOR_CI = 5


@dataclass
class Outcome:
    """How a run ended: its state, the result file, and modes that failed to build."""

    state: str
    path: str
    failed_modes: list[str] = field(default_factory=list)
    samples: int = 0


def tools_needed(definition: Definition) -> list[Any]:
    """Runner modules whose program the definition's tests need (each has check())."""
    needed = []
    for test in definition.tests:
        runner = sampler.RUNNERS[test.kind]
        if runner not in needed:
            needed.append(runner)
    return needed


def check_tools(definition: Definition) -> None:
    """Raise ToolMissing for the first missing program, before anything is built."""
    for runner in tools_needed(definition):
        runner.check()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While a run is live, SIGTERM stops it the way Ctrl-C does (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(definition: Definition, out_dir: str, progress: Progress | None = None,
        command: list[str] | None = None) -> Outcome:
    check_tools(definition)
    os.makedirs(out_dir, exist_ok=True)
    machine = environment.machine()
    results = ResultFile(out_dir, definition.to_dict(), machine, command)
    if definition.repeats < MIN_REPEATS_FOR_CI:
        results.add_error(f"only {definition.repeats} repeats: confidence intervals need at "
                          f"least {MIN_REPEATS_FOR_CI} to mean much")
    results.write()
    outcome = Outcome("running", results.path)
    live_modes: dict[str, LiveMode] = {}
    context: modes.BuildContext | None = None
    work_dir = tempfile.mkdtemp(prefix="dcnet-netbench-")
    state = "failed"
    try:
        with sigterm_as_interrupt(), contextlib.ExitStack() as stack:
            context = modes.BuildContext(stack, work_dir, _log_dir(out_dir))
            for name in definition.modes:
                _build_mode(name, definition, context, results, live_modes, outcome,
                            progress)
            outcome.samples = _run_schedule(definition, live_modes, results, out_dir,
                                            progress)
            state = "complete"
    except KeyboardInterrupt:
        state = "interrupted"
        if progress:
            progress.message("netbench: interrupted; tore everything down, writing results")
    except BaseException as exc:
        results.add_error(f"run failed: {type(exc).__name__}: {exc}")
        raise
    finally:
        _check_teardown(results, context.namespaces() if context else [])
        _remove_tree(work_dir)
        results.finish(state)
        outcome.state = state
    return outcome


def _log_dir(out_dir: str) -> str:
    path = os.path.join(out_dir, "logs")
    os.makedirs(path, exist_ok=True)
    return path


def _servers_needed(definition: Definition) -> list[str]:
    keys: list[str] = []
    for test in definition.tests:
        key = sampler.port_key(test)
        if key not in keys:
            keys.append(key)
    return keys


def _build_mode(name: str, definition: Definition, context: modes.BuildContext,
                results: ResultFile, live_modes: dict[str, LiveMode], outcome: Outcome,
                progress: Progress | None) -> None:
    info = catalogue.info(name)
    results.set_mode(name, title=info.title, path=info.path, cross_node=info.cross_node)
    reason = modes.unavailable(name)
    if reason:
        results.set_mode(name, status="unavailable", reason=reason)
        if progress:
            progress.message(f"netbench: mode {name} unavailable: {reason}")
        results.write()
        return
    started = time.monotonic()
    try:
        live = modes.build(name, context)
        for key in _servers_needed(definition):
            argv, protocol = sampler.server_argv(key, live)
            live.start_server(key, argv, protocol, live.ports[key])
    except Exception as exc:
        results.set_mode(name, status="failed", reason=f"{type(exc).__name__}: {exc}")
        outcome.failed_modes.append(name)
        if progress:
            progress.message(f"netbench: mode {name} FAILED to build: {exc}")
        results.write()
        return
    live_modes[name] = live
    results.set_mode(name, status="ok", build_s=round(time.monotonic() - started, 3),
                     lab_prefixes=live.lab_prefixes(), namespaces=live.namespaces(),
                     client_netns=live.client_ns or "<root>",
                     server_netns=live.server_ns or "<root>", target=live.target,
                     ports=live.ports, notes=live.notes,
                     servers={key: {"pid": popen.pid, "start_time": proc.start_time(popen.pid)}
                              for key, popen in live.servers.items()},
                     interfaces=[environment.interface(ns, ifname)
                                 for ns, ifname in live.interfaces],
                     client_sysctls=environment.namespace_sysctls(live.client_ns))
    results.write()


def _run_schedule(definition: Definition, live_modes: dict[str, LiveMode],
                  results: ResultFile, out_dir: str, progress: Progress | None) -> int:
    items = schedule.plan(list(live_modes), [t.name for t in definition.tests],
                          definition.repeats, definition.warmup_rounds, definition.seed)
    if progress:
        progress.total = len(items)
    raw_dir = os.path.join(out_dir, "raw")
    for item in items:
        test = definition.test(item.test)
        sample = sampler.run(item, test, live_modes[item.mode], raw_dir)
        results.add_sample(sample)
        if progress:
            figure = headline(test.kind, sample.metrics) if sample.ok else \
                f"FAILED: {sample.error}"
            warm = " (warm-up)" if item.warmup else ""
            progress.step(f"{item.mode} {item.test}{warm}: {figure}")
        if definition.settle:
            time.sleep(definition.settle)
    return len(items)


def _check_teardown(results: ResultFile, namespaces: list[str]) -> None:
    left = [name for name in namespaces if netns.exists(name)]
    results.data["run"]["teardown"] = {"namespaces_checked": len(namespaces),
                                       "namespaces_left": left}
    if left:
        results.add_error(f"teardown left namespaces: {', '.join(left)}")


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
