"""A rolling restart of app instances under dcnet-init behind real IPVS (kernel lab only).

``rolling_restart(lab, workdir, state_dir)``: the LVS lab of :mod:`dcnet.lab.lvs_lab`
(director, carrier clients, real servers rs1..rsN) with the NAT service only in use;
each real server runs :mod:`dcnet.lab.keepalive_app` (the app: HTTP/1.1 keep-alive,
on SIGTERM it closes idle connections and answers requests in flight with ``Connection:
close``; stdlib only, started with ``python -I -S``) under ``dcnet-init`` with the ELB
hooks ``elbctl backend add|drain|remove --target lvs`` (``--lvs-netns`` the director's
namespace, a shared state directory). Both carrier clients run, the whole time, a
new-connection load (a shell loop of ``curl``, one request per connection; each line
``<start time> <body> <http code>``) and ``KEEPALIVE_CLIENTS`` keep-alive loads (a loop
of ``curl`` given ``KEEPALIVE_URLS`` URLs at ``KEEPALIVE_RATE``: one connection reused
for minutes; curl retries a request once on a fresh connection when a reused one died
before any answer, as real clients do; each line ``<end time> <body> <http code>
<connects> <seconds>``). Every
instance is stopped (SIGTERM to its init: drain hook, then the app, then the remove
hook) and a new one started, one after the other, while a thread runs full applies of
the model (in-process, the lvs target under its lock) in a loop. With ``hooks=False``
the app runs without init and is killed directly, and the new one is not registered
(the contrast: what a restart without the hooks costs).

See docs/init.md "Rolling restart behind LVS". Used by tests/kernel/test_init_lvs.py and
bench/lvs_drain.py.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from dcnet.lab import lvs_lab as lvslab
from dcnet.model import parse_model

BIN = os.path.dirname(sys.executable)
APP_PORT = lvslab.RS_HTTP
APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keepalive_app.py")
KEEPALIVE_CLIENTS = 4           # per carrier: 8 connections over the 3 servers
KEEPALIVE_URLS = 600            # per curl (per connection unless the server closes it)
KEEPALIVE_RATE = "2/s"          # per curl: a connection lives ~5 min, longer than a drain
VIP = {carrier: vips[0] for carrier, vips in lvslab.VIPS.items()}   # the NAT VIPs
WAIT = 600.0                    # bounds every wait (emulation on a loaded host is slow)


def model_text(drain_deadline: int = 10) -> str:
    return lvslab.model_text().replace(
        "lvs: {drain_seconds: 30}", f"lvs: {{drain_seconds: 30, drain_deadline: {drain_deadline}}}")


def model(drain_deadline: int = 10):
    return parse_model(model_text(drain_deadline), source="init-lvs.yaml",
                       read_text=lvslab.CIDR_FILES.__getitem__)


def topology(busybox: str, docroot: str) -> dict:
    """The LVS lab without its httpd processes (the instances run them under init)."""
    return {**lvslab.topology(busybox, docroot), "processes": []}


def load_loop(url: str, stop_file: str, timeout: float = 5.0) -> list[str]:
    """argv of one shell sending requests (one connection each) until ``stop_file``
    exists; each prints ``<epoch start> <body> <http code>`` (``000``: failed)."""
    script = (f"while [ ! -e {shlex.quote(stop_file)} ]; do t=$(date +%s.%N); "
              f"b=$(curl -s -m {timeout:g} -w ' %{{http_code}}' {shlex.quote(url)}) || true; "
              f"echo \"$t $b\" | tr '\\n' ' '; echo; done")
    return ["sh", "-c", script]


def keepalive_loop(url: str, stop_file: str, timeout: float = 5.0) -> list[str]:
    """argv of one shell running ``curl`` with ``KEEPALIVE_URLS`` URLs (one connection,
    reused) at ``KEEPALIVE_RATE`` again and again until ``stop_file`` exists; each request
    prints ``<epoch end> <body>|<http code>|<connects>|<seconds>|<curl exit>|<error>``
    (code ``000``: failed; connects 0: on a reused connection). bash stamps each line as
    curl writes it (line-buffered by stdbuf); a curl still running when ``stop_file``
    appears is killed (within 3 s; its request in progress, if any, is not reported)."""
    urls = f"{url}?n=[1-{KEEPALIVE_URLS}]"
    stop = shlex.quote(stop_file)
    script = (f"while [ ! -e {stop} ]; do "
              f"stdbuf -oL curl -s -m {timeout:g} --rate {KEEPALIVE_RATE} "
              "-w '|%{http_code}|%{num_connects}|%{time_total}|%{exitcode}|%{errormsg}\\n' "
              f"{shlex.quote(urls)} & c=$!; "
              f"while kill -0 $c 2>/dev/null && [ ! -e {stop} ]; do sleep 3; done; "
              "kill $c 2>/dev/null; wait $c; done | "
              "while IFS= read -r line; do echo \"$EPOCHREALTIME $line\"; done")
    return ["bash", "-c", script]


def parse_keepalive(text: str) -> list[tuple[float, str, str, int, str]]:
    """(start, body, code, connects, curl's exit code and error) per request of
    :func:`keepalive_loop` output (start: the line's time less the request's duration)."""
    out = []
    for line in text.splitlines():
        parts = line.split("|", 5)
        if len(parts) == 6:
            end, _, body = parts[0].partition(" ")
            code, connects, seconds, exitcode, error = parts[1:]
            out.append((float(end) - float(seconds), body.strip(), code, int(connects),
                        f"{exitcode} {error}".strip() if exitcode != "0" else ""))
    return out


def parse_load(text: str) -> list[tuple[float, str, str]]:
    """(start, body, code) per request of :func:`load_loop` output."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out.append((float(parts[0]), parts[1] if len(parts) > 2 else "", parts[-1]))
    return out


@dataclass
class RollingResult:
    requests: list[tuple[float, str, str]] = field(default_factory=list)   # new-connection
    keepalive: list[tuple[float, str, str, int, str]] = field(default_factory=list)
    rolls: list[tuple[str, float, float]] = field(default_factory=list)  # SIGTERM, exit
    per_instance: list[float] = field(default_factory=list)
    applies: int = 0
    apply_failures: list[str] = field(default_factory=list)
    init_codes: list[int] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)     # each init's output (tail)

    def event(self, what: str) -> None:
        self.events.append((time.time(), what))

    def report(self) -> str:
        """Counts, failures, the timeline and the inits' output (an assertion message)."""
        lines = [self.summary(), f"failed: {self.failed[:20]}", "timeline:"]
        lines += [f"  {t:.1f} {what}" for t, what in self.events]
        lines += [f"  {t:.1f} FAILED {kind} request {error}"
                  for kind, t, _, _, error in self.failed]
        for name, text in self.logs.items():
            lines += [f"--- {name}", text]
        return "\n".join(lines)

    @property
    def failed(self) -> list[tuple[str, float, str, str, str]]:
        """(kind, start, body, code, error) of every failed request, both kinds (the
        new-connection loop records no error)."""
        return ([("new-connection", *r, "") for r in self.requests if r[2] != "200"]
                + [("keep-alive", *r[:3], r[4]) for r in self.keepalive if r[2] != "200"])

    def served(self) -> Counter:
        return Counter(r[1] for r in self.requests + self.keepalive if r[2] == "200")

    def reused(self) -> int:
        """Keep-alive requests answered on a reused connection."""
        return sum(1 for r in self.keepalive if r[2] == "200" and r[3] == 0)

    def answered_while_stopping(self) -> dict[str, int]:
        """Keep-alive requests each old instance answered between its SIGTERM and its
        init's exit (its drain wait and its app's graceful stop)."""
        return {host: sum(1 for start, body, code, *_ in self.keepalive
                          if body == host and code == "200" and term <= start <= end)
                for host, term, end in self.rolls}

    def summary(self) -> str:
        def count(rows) -> str:
            ok = sum(1 for r in rows if r[2] == "200")
            return f"{ok} ok / {len(rows) - ok} failed"
        return (f"new-connection requests {count(self.requests)}; keep-alive requests "
                f"{count(self.keepalive)} ({self.reused()} on a reused connection); "
                f"keep-alive answered by an instance after its SIGTERM: "
                f"{self.answered_while_stopping()}")


def _wait(predicate, what: str, limit: float = WAIT) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


class Instances:
    """The app instances, rs1..rsN, each under dcnet-init with the ELB hooks (or bare)."""

    def __init__(self, lab, workdir: str, state_dir: str, hooks: bool):
        self.lab, self.workdir, self.state_dir = lab, workdir, state_dir
        self.hooks = hooks
        self.generation: dict[int, int] = {}
        self.procs: dict[int, subprocess.Popen] = {}

    def start(self, i: int) -> None:
        gen = self.generation[i] = self.generation.get(i, 0) + 1
        address = lvslab.SERVERS[i - 1]
        app = [sys.executable, "-I", "-S", APP, str(APP_PORT), f"rs{i}"]
        argv = app
        if self.hooks:
            elb = [f"--elb-arg={a}" for a in ("--target=lvs",
                                              f"--lvs-netns={self.lab.netns('director')}",
                                              f"--lvs-state-dir={self.state_dir}")]
            argv = [os.path.join(BIN, "dcnet-init"), "--check", f"tcp:{address}:{APP_PORT}",
                    "--interval", "0.2", "--grace", "10", "--drain-deadline", str(WAIT),
                    "--hook-timeout", str(WAIT), "--elb-service", lvslab.JOB_NAT,
                    "--elb-server", address, "--elbctl", os.path.join(BIN, "elbctl"),
                    *elb, "--", *app]
        self.procs[i] = self.lab.start(f"rs{i}", argv, name=f"rs{i}-app-{gen}",
                                       log_path=os.path.join(self.workdir, f"rs{i}-{gen}.log"))

    def stop_all(self) -> None:
        """Stop every instance at once (with hooks: their drains run concurrently)."""
        running = [p for p in self.procs.values() if p.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM if self.hooks else signal.SIGKILL)
        for proc in running:
            proc.wait(WAIT)

    def stop(self, i: int) -> int:
        proc = self.procs[i]
        proc.send_signal(signal.SIGTERM if self.hooks else signal.SIGKILL)
        return proc.wait(WAIT)


def _listening(lab, address: str) -> bool:
    """The app at ``address`` answers (from the director's namespace)."""
    run = lab.run("director", ["curl", "-s", "-o", "/dev/null", "-m", "5",
                               f"http://{address}:{APP_PORT}/id"], check=False)
    return run.returncode == 0


def _registered(lab, state_dir: str, address: str) -> bool:
    """The add hook ran (the registry has the server active) and every dest of the
    server carries weight. (The model's own servers are weighted from the first apply
    on, before any instance listens: the registry says the hook ran.)"""
    from dcnet.lvs.dynamic import server_counts
    from dcnet.lvs.ipvs import KernelIPVS
    from dcnet.lvs.store import Store

    store = Store(state_dir)
    entry = store.registry().get(lvslab.JOB_NAT, {}).get(address, {})
    if entry.get("state") != "active":
        return False
    layout = store.layouts()[0][lvslab.JOB_NAT]
    ipvs = KernelIPVS(lab.netns("director"))
    try:
        counts = server_counts(ipvs, layout, address)
    finally:
        ipvs.close()
    return counts.dests == len(VIP) and counts.weight > 0


def _full_apply(lab, state_dir: str, the_model) -> str | None:
    from dcnet.lvs.backend import LVSTarget
    from dcnet.target import apply_plan, make_plan

    target = LVSTarget(netns=lab.netns("director"), state_dir=state_dir)
    try:
        with target.lock(WAIT):
            result = apply_plan(target, make_plan(target, the_model))
        return None if result.ok else result.to_text()[-500:]
    finally:
        target.close()


def rolling_restart(lab, workdir: str, state_dir: str, instances: int = 3,
                    hooks: bool = True, drain_deadline: int = 10, settle: float = 1.0,
                    concurrent_applies: bool = True) -> RollingResult:
    """Restart rs1..rs``instances`` one after the other under load (see the module
    docstring); the lab's director must already hold the applied model."""
    the_model = model(drain_deadline)
    apps = Instances(lab, workdir, state_dir, hooks)
    for i in range(1, instances + 1):
        apps.start(i)
    for i in range(1, instances + 1):
        address = lvslab.SERVERS[i - 1]
        _wait(lambda a=address: _listening(lab, a), f"instance {i} listening")
        _wait(lambda a=address: not hooks or _registered(lab, state_dir, a),
              f"instance {i} registered")
    result = RollingResult()
    result.event("every instance listening and registered")
    stop_file = os.path.join(workdir, "load.stop")
    loads = []
    for carrier, vip in VIP.items():
        out = os.path.join(workdir, f"load-{carrier}.out")
        loads.append((lab.start(f"cli-{carrier}", load_loop(f"http://{vip}/id", stop_file),
                                name=f"load-{carrier}", log_path=out), out))
    keepalives = []
    for carrier, vip in VIP.items():
        for k in range(1, KEEPALIVE_CLIENTS + 1):
            out = os.path.join(workdir, f"keepalive-{carrier}-{k}.out")
            keepalives.append((lab.start(f"cli-{carrier}",
                                         keepalive_loop(f"http://{vip}/id", stop_file),
                                         name=f"keepalive-{carrier}-{k}", log_path=out), out))

    def keepalive_ok() -> int:
        return sum(1 for _, path in keepalives
                   for r in parse_keepalive(read_text(path)) if r[2] == "200")

    def served_by(host: str) -> int:
        return sum(1 for _, path in loads for _, body, code in parse_load(read_text(path))
                   if body == host and code == "200")

    _wait(lambda: all(served_by(f"rs{i}") > 0 for i in range(1, instances + 1)),
          "every instance serving")
    _wait(lambda: keepalive_ok() > 0, "keep-alive requests answered")
    result.event("load running (both kinds)")
    stop_applying = threading.Event()

    def apply_loop() -> None:
        while not stop_applying.is_set():
            failure = _full_apply(lab, state_dir, the_model)
            result.applies += 1
            if failure:
                result.apply_failures.append(failure)
            stop_applying.wait(0.5)

    applier = threading.Thread(target=apply_loop, daemon=True)
    if concurrent_applies:
        applier.start()
    try:
        for i in range(1, instances + 1):
            started, term = time.monotonic(), time.time()
            result.event(f"SIGTERM rs{i}")
            result.init_codes.append(apps.stop(i))
            result.rolls.append((f"rs{i}", term, time.time()))
            result.event(f"rs{i} exited {result.init_codes[-1]}; starting a new one")
            apps.start(i)
            host, address = f"rs{i}", lvslab.SERVERS[i - 1]
            base = served_by(host)
            if hooks:
                _wait(lambda a=address: _registered(lab, state_dir, a),
                      f"new instance {i} registered")
                result.event(f"new rs{i} registered")
            _wait(lambda h=host, b=base: served_by(h) > b, f"new instance {i} serving")
            result.event(f"new rs{i} serving")
            result.per_instance.append(time.monotonic() - started)
            time.sleep(settle)
    finally:
        stop_applying.set()
        if concurrent_applies:
            applier.join(WAIT)
        with open(stop_file, "w") as handle:
            handle.write("stop\n")
        for proc, _ in loads + keepalives:
            proc.wait(WAIT)
        result.event("load stopped")
        apps.stop_all()
        result.event("every instance stopped")
        for name in sorted(os.listdir(workdir)):
            if name.startswith("rs") and name.endswith(".log"):
                result.logs[name] = read_text(os.path.join(workdir, name))[-3000:]
    for _, path in loads:
        result.requests += parse_load(read_text(path))
    for _, path in keepalives:
        result.keepalive += parse_keepalive(read_text(path))
    return result


def read_text(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return ""
