"""``netbench run``: build the modes, run the schedule, write results, always tear down.

Order of work: check that the tools the tests need exist (before anything is built);
record the environment; build every mode of the definition on one ExitStack (a mode that
cannot run here is recorded ``unavailable`` with the reason, one whose build fails is
recorded ``failed`` and the run goes on without it); start the servers each mode needs;
run the shuffled, interleaved schedule of (mode, address family, test), writing the
result file after every sample; then unwind the stack (CNI DEL, servers, labs) and check
that no namespace of the run is left. Ctrl-C and SIGTERM (turned into KeyboardInterrupt
while a run is live) stop the schedule, tear everything down and still write what was
measured, with the run state ``interrupted``. A mode that cannot use a family of the
definition (IPv6 on dcnet host-gw when the installed plugin refuses it) and a test whose
tool cannot (sockperf 3.7 over IPv6; the rr kind, qperf, measures latency over both
families) are recorded ``skipped`` for that family with the reason, never failed; the
mode still runs its other families.
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

from dcnet.netbench import catalogue, environment, modes, sampler, schedule, sockperf
from dcnet.netbench.definition import Definition
from dcnet.netbench.live import LiveMode
from dcnet.netbench.progress import Progress, headline
from dcnet.netbench.results import ResultFile
from dcnet.sysio import netns, proc

MIN_REPEATS_FOR_CI = 5
TestSkips = dict[tuple[str, str], str]   # (family, test name) -> why it is not run


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


def test_skips(definition: Definition, sockperf_version: str | None = None) -> TestSkips:
    """(family, test) cells no mode can run with the installed tools, with the reason."""
    skips: TestSkips = {}
    if "ipv6" not in definition.families:
        return skips
    latency = [test.name for test in definition.tests if test.kind == "latency"]
    if latency:
        if sockperf_version is None:
            sockperf_version = sockperf.version()
        reason = sockperf.ipv6_unsupported(sockperf_version)
        if reason:
            skips.update({("ipv6", name): reason for name in latency})
    return skips


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
    live_modes: dict[tuple[str, str], LiveMode] = {}
    skips = test_skips(definition)
    context: modes.BuildContext | None = None
    work_dir = tempfile.mkdtemp(prefix="dcnet-netbench-")
    state = "failed"
    try:
        with sigterm_as_interrupt(), contextlib.ExitStack() as stack:
            context = modes.BuildContext(stack, work_dir, _log_dir(out_dir))
            for name in definition.modes:
                _build_mode(name, definition, context, results, live_modes, outcome,
                            progress, skips)
            outcome.samples = _run_schedule(definition, live_modes, results, out_dir,
                                            progress, skips)
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


def _servers_needed(definition: Definition, family: str = "ipv4",
                    skips: TestSkips | None = None) -> list[str]:
    keys: list[str] = []
    for test in definition.tests:
        if (family, test.name) in (skips or {}):
            continue
        key = sampler.port_key(test)
        if key not in keys:
            keys.append(key)
    return keys


def _build_mode(name: str, definition: Definition, context: modes.BuildContext,
                results: ResultFile, live_modes: dict[tuple[str, str], LiveMode],
                outcome: Outcome, progress: Progress | None, skips: TestSkips) -> None:
    info = catalogue.info(name)
    results.set_mode(name, title=info.title, path=info.path, cross_node=info.cross_node)
    reason = modes.unavailable(name)
    if reason:
        results.set_mode(name, status="unavailable", reason=reason)
        if progress:
            progress.message(f"netbench: mode {name} unavailable: {reason}")
        results.write()
        return
    families, per_family = [], {}  # per_family: family -> status entry
    for family in definition.families:
        why = modes.family_unavailable(name, family)
        if why:
            per_family[family] = {"status": "skipped", "reason": why}
            if progress:
                progress.message(f"netbench: mode {name} skipped over {family}: {why}")
        else:
            families.append(family)
    results.set_mode(name, families=per_family)
    if not families:
        results.set_mode(name, status="skipped",
                         reason="; ".join(entry["reason"] for entry in per_family.values()))
        results.write()
        return
    started = time.monotonic()
    try:
        built = modes.build(name, context, families)
        for family, live in built.items():
            live.wait_reachable()
            for key in _servers_needed(definition, family, skips):
                argv, protocol = sampler.server_argv(key, live)
                live.start_server(key, argv, protocol, live.ports[key])
    except Exception as exc:
        results.set_mode(name, status="failed", reason=f"{type(exc).__name__}: {exc}")
        outcome.failed_modes.append(name)
        if progress:
            progress.message(f"netbench: mode {name} FAILED to build: {exc}")
        results.write()
        return
    for family, live in built.items():
        live_modes[(name, family)] = live
        per_family[family] = {
            "status": "ok", "target": live.target, "bind_address": live.bind_address,
            "ports": live.ports, "skipped_tests": {test: why for (fam, test), why
                                                   in skips.items() if fam == family},
            "servers": _servers(live)}
    first = next(iter(built.values()))
    results.set_mode(name, status="ok", build_s=round(time.monotonic() - started, 3),
                     lab_prefixes=first.lab_prefixes(), namespaces=first.namespaces(),
                     client_netns=first.client_ns or "<root>",
                     server_netns=first.server_ns or "<root>", target=first.target,
                     ports=first.ports, notes=first.notes, servers=_servers(first),
                     families={family: per_family[family] for family in definition.families},
                     interfaces=[environment.interface(ns, ifname)
                                 for ns, ifname in first.interfaces],
                     client_sysctls=environment.namespace_sysctls(first.client_ns))
    results.write()


def _servers(live: LiveMode) -> dict[str, dict[str, Any]]:
    return {key: {"pid": popen.pid, "start_time": proc.start_time(popen.pid)}
            for key, popen in live.servers.items()}


def _run_schedule(definition: Definition, live_modes: dict[tuple[str, str], LiveMode],
                  results: ResultFile, out_dir: str, progress: Progress | None,
                  skips: TestSkips) -> int:
    names = list(dict.fromkeys(mode for mode, _ in live_modes))
    tests = [t.name for t in definition.tests]
    skip = {(mode, family, test) for mode in names for family in definition.families
            for test in tests
            if (mode, family) not in live_modes or (family, test) in skips}
    items = schedule.plan(names, tests, definition.repeats, definition.warmup_rounds,
                          definition.seed, definition.families, skip)
    if progress:
        progress.total = len(items)
    raw_dir = os.path.join(out_dir, "raw")
    for item in items:
        test = definition.test(item.test)
        sample = sampler.run(item, test, live_modes[(item.mode, item.family)], raw_dir)
        results.add_sample(sample)
        if progress:
            figure = headline(test.kind, sample.metrics) if sample.ok else \
                f"FAILED: {sample.error}"
            warm = " (warm-up)" if item.warmup else ""
            family = "" if item.family == "ipv4" else f" {item.family}"
            progress.step(f"{item.mode}{family} {item.test}{warm}: {figure}")
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
