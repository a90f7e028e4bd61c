"""Long fuzzing run over the service model and the CNI config (issue #15's measurements).

    .venv/bin/python bench/fuzz.py [--examples 5000] [--binary-examples 200] [--seed 1]

Surfaces, each reported with cases tried, failures, the slowest case and peak memory:

- ``model``: hypothesis' grammar-aware mutations of the example model
  (tests/unit/test_fuzz_mutations.py) through ``parse_model`` in this process; a failure
  is any exception but ModelError, or a problem without a line;
- ``cni-config``: mutated CNI configs through ``decode_conf`` + ``load_conf`` +
  ``runtime_requests``; a failure is anything but CniError, or code 999 (INTERNAL);
- ``elbctl``: the hostile corpus (tests/data/hostile) and generated worst cases under
  1 MiB (a valid model of ~4,000 services, alias bombs at the budget, 200,000-entry
  lists, 100,000 unknown keys, a 1 MiB carrier list of ~58,000 prefixes, and three
  identical ones (3 MiB together, so above the 1 MiB line), ...) through
  the real ``elbctl validate`` subprocess: exit 1 (0 for the valid one), every problem
  line FILE:LINE, no traceback, the model's directory unchanged; wall time, CPU time and
  peak RSS of each child from ``wait4``;
- ``elbctl-push``: the same files through ``elbctl push`` to a closed store port: every
  invalid one refused (exit 1, FILE:LINE) before the store is contacted, the valid ones
  exit 3 (store unavailable) after every check passed;
- ``netbench``: tests/data/hostile/netbench, ``/dev/zero`` and worst cases under 1 MiB
  (200,000 modes, 999 nested lists, a 1 MiB comment, 20,000 broken tests, random bytes)
  through the real ``netbench run`` (root): exit 2, every line FILE:LINE, nothing built;
- ``etcd-values``: a hostile backend key and value (tests/unit/test_hostile_etcd_values.py:
  JSON of any shape, bytes, any key) put into an ELB agent's desired state, then the
  effective model built; a failure is any exception, or a problem not naming the key;
- ``dcnet-cni``: mutated configs through the real ``dcnet-cni`` with CNI_COMMAND=ADD and a
  namespace path that does not exist: an error JSON with a code (never 999), no
  traceback, the config's directories and the host's links unchanged.

Peak memory of the in-process surfaces is this process's peak RSS (hypothesis included);
of the subprocess surfaces, the largest child's. Time is wall-clock on a shared machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

from dcnet.cni.errors import INTERNAL  # noqa: E402
from tests.unit.test_fuzz_cni import BINARY_CASES, check_cni_outcome  # noqa: E402
from tests.unit.test_fuzz_cni import parse_outcome as cni_outcome  # noqa: E402
from tests.unit.test_fuzz_model import check_model_outcome, tree_digest  # noqa: E402
from tests.unit.test_fuzz_model import parse_outcome as model_outcome  # noqa: E402
from tests.unit.test_fuzz_mutations import cni_inputs, model_texts  # noqa: E402
from tests.unit.test_hostile_etcd_values import (  # noqa: E402
    backend_puts,
    check_put_outcome,
    put_outcome,
)

BIN = os.path.dirname(sys.executable)
HOSTILE = ROOT / "tests" / "data" / "hostile"
MIB = 1 << 20
TIME = "/usr/bin/time"      # GNU time (Debian package 'time')


@dataclass
class Surface:
    name: str
    tried: int = 0
    failures: list[str] = field(default_factory=list)
    slowest: tuple[float, str] = (0.0, "")
    slowest_cpu: tuple[float, str] = (0.0, "")
    peak_kib: int = 0
    largest: int = 0
    verbose: bool = False

    def record(self, seconds: float, label: str, size: int, problem: str | None,
               peak_kib: int = 0, cpu: float | None = None) -> None:
        self.tried += 1
        if cpu is not None and cpu > self.slowest_cpu[0]:
            self.slowest_cpu = (cpu, label)
        self.largest = max(self.largest, size)
        self.peak_kib = max(self.peak_kib, peak_kib)
        if seconds > self.slowest[0]:
            self.slowest = (seconds, label)
        if problem:
            self.failures.append(f"{label}: {problem}")
        if self.verbose:
            cpu_text = "" if cpu is None else f" ({cpu * 1000:.0f} ms CPU)"
            print(f"  {self.name.split()[0]} {label}: {size / 1024:.0f} KiB, "
                  f"{seconds * 1000:.0f} ms{cpu_text}, {peak_kib / 1024:.0f} MiB"
                  f"{', FAIL ' + problem if problem else ''}", flush=True)

    def report(self) -> str:
        cpu = (f", most CPU {self.slowest_cpu[0] * 1000:.0f} ms ({self.slowest_cpu[1]})"
               if self.slowest_cpu[1] else "")
        lines = [f"{self.name}: {self.tried} cases, {len(self.failures)} failures, largest "
                 f"input {self.largest / 1024:.0f} KiB, slowest {self.slowest[0] * 1000:.0f} "
                 f"ms wall ({self.slowest[1]}){cpu}, peak memory "
                 f"{self.peak_kib / 1024:.0f} MiB"]
        lines += [f"  FAIL {f}" for f in self.failures[:20]]
        return "\n".join(lines)


def self_peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_in_process(surface: Surface, strategy, outcome, check, examples: int,
                   seed_value: int, keep_slowest: Path | None = None) -> None:
    """``examples`` hypothesis cases of ``strategy``: ``outcome(data)`` then ``check``;
    the slowest input is written to ``keep_slowest``."""
    @seed(seed_value)
    @settings(max_examples=examples, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(data: bytes) -> None:
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            result = outcome(data)
        except Exception as exc:     # a crash of the surface is the finding
            result = exc
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        problem = None
        try:
            check(result)
        except AssertionError as exc:
            problem = str(exc)[:200] or f"unexpected {type(result).__name__}: {result}"[:200]
        label = f"{len(data)} bytes, sha1 {hashlib.sha1(data).hexdigest()[:10]}"
        if seconds > surface.slowest[0] and keep_slowest:
            keep_slowest.write_bytes(data)
        surface.record(seconds, label, len(data), problem, self_peak_kib(), cpu)

    one()


def child(argv: list[str], stdin: bytes | None = None, env: dict | None = None):
    """Run ``argv`` under GNU time; (exit code, stdout, stderr, wall seconds, CPU seconds,
    peak KiB). GNU time forks the command from its own small image: ``wait4`` on a child
    forked from this (large) process would report this process's RSS as the child's peak."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryFile() as inp, tempfile.NamedTemporaryFile("r") as usage:
        inp.write(stdin or b"")
        inp.seek(0)
        start = time.perf_counter()
        code = subprocess.call([TIME, "-q", "-f", "%x %U %S %M", "-o", usage.name, *argv],
                               stdin=inp, stdout=out, stderr=err, env=env)
        wall = time.perf_counter() - start
        fields = usage.read().split()
        if len(fields) == 4:
            code = int(fields[0])
        out.seek(0)
        err.seek(0)
        cpu = float(fields[1]) + float(fields[2]) if len(fields) == 4 else 0.0
        peak = int(fields[3]) if len(fields) == 4 else 0
        return (code, out.read().decode("utf-8", "replace"),
                err.read().decode("utf-8", "replace"), wall, cpu, peak)


PUSH = ("push", "--store", "etcd://127.0.0.1:9")   # refused before the (closed) store


def elbctl_case(surface: Surface, path: Path, expect_ok: bool = False,
                command: tuple[str, ...] = ("validate",), ok_code: int = 0) -> None:
    before = tree_digest(str(path.parent))
    code, out, err, wall, cpu, peak = child([os.path.join(BIN, "elbctl"), *command, "-f",
                                             str(path)])
    problem = None
    if "Traceback" in out + err:
        problem = "traceback: " + err.strip().splitlines()[-1][:150]
    elif code != (ok_code if expect_ok else 1):
        problem = f"exit {code}: {err.strip()[:150]}"
    elif not expect_ok:
        lines = [x.strip() for x in err.splitlines()[1:] if x.strip()]
        bad = [x for x in lines if not re.match(r"\S+:\d+: ", x) and
               not x.endswith("not listed")]
        if not lines or bad:
            problem = f"problem without a line: {(bad or ['none'])[0][:150]}"
    if tree_digest(str(path.parent)) != before:
        problem = "the model's directory changed"
    surface.record(wall, path.name, path.stat().st_size if path.is_file() else 0, problem,
                   peak, cpu)


def stress_models(directory: Path) -> list[tuple[Path, bool]]:
    """Worst cases under 1 MiB each, written into ``directory``: (path, valid?)."""
    import model_load

    out = []

    def put(name: str, text: str, valid: bool = False) -> None:
        path = directory / name
        path.write_text(text)
        assert path.stat().st_size < MIB, (name, path.stat().st_size)
        out.append((path, valid))

    valid_dir = directory / "valid"
    valid_dir.mkdir()
    out.append((model_load.write_model(valid_dir, 4000), True))
    head = "version: 1\ncarriers: []\n"
    put("flat_list.yaml", head + "services: [" + "x," * 199_990 + "x]\n")
    put("unknown_keys.yaml", head + "".join(f"k{i}: 1\n" for i in range(100_000)))
    put("long_list_of_maps.yaml", head + "services: [" + "{a: 1}," * 140_000 + "{}]\n")
    # aliases at the budget: written nodes N, aliased ~N, landing where the reader works
    written = ",".join(["{job: x, vips: {a: b}, ports: [1]}"] * 12_000)
    put("alias_at_budget.yaml", head + f"x_pool: &p [{written}]\n"
        "services: [" + ",".join(["*p"] * 9) + "]\n")
    put("alias_bomb_wide.yaml", head + "x: &a [" + "lol," * 1000 + "lol]\n"
        "services: [" + "*a," * 100_000 + "*a]\n")
    laughs = head + 'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i in range(1, 30):
        laughs += f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]\n"
    put("billion_laughs_deep.yaml", laughs + "services: *l29\n")
    put("nested_1000.yaml", head + "services: " + "[" * 999 + "]" * 999 + "\n")
    put("long_string.yaml", head + "services: " + "x" * (MIB - 100) + "\n")
    put("many_problems.yaml", head.replace("[]", "[{name: T, table: 255}]") +
        "services:\n" + "  - {job: x, vips: 1, ports: [{port: 0}], bogus: 1}\n" * 18_000)
    lists = directory / "lists"
    lists.mkdir()
    prefixes = "".join(f"10.{i // 256}.{i % 256}.0/24\n" for i in range(60_000))
    for name in ("a", "b", "c"):
        (lists / f"{name}.txt").write_text(prefixes[: MIB - 1000])
    carriers = "".join(
        f"  - {{name: {n}, uplink: u{i}, gateway: 192.0.2.{i + 1}, table: {100 + i}, "
        f"vip_ranges: [198.51.{100 + i}.0/24], cidrs: lists/{n}.txt"
        f"{', default: true' if n == 'a' else ''}}}\n"
        for i, n in enumerate("abc"))
    put("overlapping_lists.yaml", f"version: 1\ncarriers:\n{carriers}services: []\n")
    one = carriers.replace(", cidrs: lists/b.txt", "").replace(", cidrs: lists/c.txt", "")
    put("one_big_list.yaml", f"version: 1\ncarriers:\n{one}services: []\n", valid=True)
    raw = directory / "random_bytes.yaml"
    raw.write_bytes(os.urandom(MIB - 1))
    out.append((raw, False))
    return out


def run_elbctl(surface: Surface, command: tuple[str, ...] = ("validate",),
               ok_code: int = 0) -> None:
    for path in sorted(HOSTILE.glob("*.yaml")):
        elbctl_case(surface, path, command=command)
    with tempfile.TemporaryDirectory() as tmp:
        for path, valid in stress_models(Path(tmp)):
            elbctl_case(surface, path, expect_ok=valid, command=command, ok_code=ok_code)


def run_netbench(surface: Surface) -> None:
    """The netbench corpus and worst cases under 1 MiB through the real ``netbench run``
    (as root): exit 2 (a schema error), every line FILE:LINE, no run directory made."""
    with tempfile.TemporaryDirectory() as tmp:
        gen = Path(tmp)
        head = "netbench: 1\nname: x\nbaseline: veth\ntests: []\n"
        cases = {"modes_200000.yaml": head + "modes: [" + "veth," * 199_990 + "veth]\n",
                 "nested_999.yaml": head + "modes: " + "[" * 999 + "]" * 999 + "\n",
                 "comment_1mib.yaml": head + "#" * (MIB - 200) + "\nmodes: [veth]\n",
                 "tests_20000.yaml": head.replace("tests: []\n", "modes: [veth]\ntests:\n") +
                 "  - {name: t, kind: tcp, streams: 0, bogus: 1}\n" * 20_000}
        for name, text in cases.items():
            (gen / name).write_text(text)
        (gen / "random.yaml").write_bytes(os.urandom(MIB - 1))
        paths = sorted((HOSTILE / "netbench").glob("*.yaml")) + sorted(gen.glob("*.yaml"))
        for path in [*paths, Path("/dev/zero")]:
            out = gen / "out"
            code, stdout, err, wall, cpu, peak = child(
                [os.path.join(BIN, "netbench"), "run", str(path), "-o", str(out)])
            lines = [x.removeprefix("netbench: ") for x in err.splitlines() if x.strip()]
            problem = None
            if "Traceback" in stdout + err:
                problem = "traceback: " + err.strip().splitlines()[-1][:150]
            elif code != 2:
                problem = f"exit {code}: {err.strip()[:150]}"
            elif not lines or any(not re.match(r"\S+:\d+: ", x) for x in lines):
                problem = f"problem without a line: {err.strip()[:150]}"
            elif out.exists():
                problem = "a run directory was created"
            size = path.stat().st_size if path.is_file() else 0
            surface.record(wall, path.name, size, problem, peak, cpu)


def run_cni_binary(surface: Surface, examples: int, seed_value: int) -> None:
    cases = list(BINARY_CASES)

    @seed(seed_value)
    @settings(max_examples=examples, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(cni_inputs())
    def collect(data: bytes) -> None:
        cases.append((f"mutated-{len(cases)}", data))

    collect()
    links = sorted(os.listdir("/sys/class/net"))
    for label, data in cases:
        with tempfile.TemporaryDirectory() as tmp:
            stdin = data.replace(b"/nonexistent", tmp.encode())
            before = tree_digest(tmp)
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": "ADD",
                   "CNI_CONTAINERID": "fuzz0001", "CNI_NETNS": f"{tmp}/no-netns",
                   "CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent"}
            code, out, err, wall, cpu, peak = child([os.path.join(BIN, "dcnet-cni")],
                                                    stdin, env)
            problem = None
            try:
                answer = json.loads(out)
                if code != 1 or not isinstance(answer.get("code"), int) or \
                        answer["code"] == INTERNAL:
                    problem = f"exit {code}: {out.strip()[:150]}"
            except ValueError:
                problem = f"no JSON on stdout (exit {code}): {out[:80]!r} {err[-150:]!r}"
            if "Traceback" in err:
                problem = "traceback: " + err.strip().splitlines()[-1][:150]
            if tree_digest(tmp) != before or sorted(os.listdir("/sys/class/net")) != links:
                problem = "state changed after a refusal"
            surface.record(wall, label, len(data), problem, peak, cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000,
                        help="hypothesis cases per in-process surface")
    parser.add_argument("--binary-examples", type=int, default=200,
                        help="mutated configs run through the real dcnet-cni")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-slowest", metavar="DIR", type=Path,
                        help="write the slowest in-process input of each surface here")
    parser.add_argument("--only", choices=["model", "cni-config", "elbctl", "dcnet-cni",
                                           "elbctl-push", "netbench", "etcd-values"],
                        action="append", help="run only these surfaces (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print every subprocess case (time, peak memory)")
    args = parser.parse_args()
    surfaces = [Surface("model (parse_model, in process)"),
                Surface("cni-config (load_conf, in process)"),
                Surface("elbctl validate (subprocess)"),
                Surface("dcnet-cni ADD (subprocess)"),
                Surface("elbctl push (subprocess, closed store)"),
                Surface("netbench run DEF (subprocess)"),
                Surface("etcd backend values (DesiredState + effective_model, in process)")]
    for surface in surfaces[2:]:
        surface.verbose = args.verbose

    def keep(name: str) -> Path | None:
        if args.keep_slowest is None:
            return None
        args.keep_slowest.mkdir(parents=True, exist_ok=True)
        return args.keep_slowest / f"slowest-{name}"
    started = time.perf_counter()
    runs = {
        "model": lambda: run_in_process(surfaces[0], model_texts(), model_outcome,
                                        lambda r: check_model_outcome("m.yaml", r),
                                        args.examples, args.seed, keep("model")),
        "cni-config": lambda: run_in_process(surfaces[1], cni_inputs(), cni_outcome,
                                             check_cni_outcome, args.examples, args.seed,
                                             keep("cni.json")),
        "elbctl": lambda: run_elbctl(surfaces[2]),
        "dcnet-cni": lambda: run_cni_binary(surfaces[3], args.binary_examples, args.seed),
        # a valid model gets through every check and then exits 3: the store is closed
        "elbctl-push": lambda: run_elbctl(surfaces[4], PUSH, ok_code=3),
        "netbench": lambda: run_netbench(surfaces[5]),
        "etcd-values": lambda: run_in_process(surfaces[6], backend_puts(), put_outcome,
                                              check_put_outcome, args.examples, args.seed,
                                              keep("etcd-value")),
    }
    chosen = args.only or list(runs)
    for name in chosen:
        runs[name]()
    surfaces = [s for s, name in zip(surfaces, runs, strict=True) if name in chosen]
    print(f"bench/fuzz.py: seed {args.seed}, {time.perf_counter() - started:.0f} s, "
          f"load average {os.getloadavg()[0]:.1f}")
    for surface in surfaces:
        print(surface.report())
    total = sum(len(s.failures) for s in surfaces)
    print(f"total: {sum(s.tried for s in surfaces)} cases, {total} failures")
    sys.exit(1 if total else 0)


if __name__ == "__main__":
    main()
