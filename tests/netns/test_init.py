"""dcnet-init as PID 1 (``unshare --pid --fork``) and as a supervisor's child: exit codes,
signal forwarding, zombie reaping (against tini where it applies), health, hooks and
the drain-before-stop order, crash deregistration, debug mode, environment injection."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.netns
INIT = [sys.executable, "-m", "dcnet.cli.init"]
TINI = shutil.which("tini")


def need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (PID namespaces)")


def pid1(*argv: str) -> list[str]:
    """Run argv as PID 1 of a new PID namespace with its own /proc."""
    return ["unshare", "--pid", "--fork", "--mount-proc", *argv]


def reap(proc: subprocess.Popen) -> None:
    """Kill (if still running), wait, and close the pipes (warnings are errors here)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


INITS = [pytest.param([*INIT, "--"], id="dcnet-init"),
         pytest.param([TINI, "-s", "--"] if TINI else None, id="tini")]


def _init(argv):
    if argv is None:
        pytest.skip("tini is not installed")
    return argv


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize(("script", "code"), [("exit 0", 0), ("exit 7", 7),
                                              ("kill -TERM $$", 128 + 15),
                                              ("kill -KILL $$", 128 + 9)])
def test_exit_codes_as_pid1(init, script, code):
    need_root()
    proc = subprocess.run(pid1(*_init(init), "sh", "-c", script), capture_output=True,
                          timeout=60)
    assert proc.returncode == code, proc.stderr


@pytest.mark.parametrize("init", INITS)
def test_a_thousand_orphans_are_reaped(init, tmp_path):
    need_root()
    out = tmp_path / "zombies"
    script = (
        "for i in $(seq 1000); do ( sleep 0.2 & ) ; done; sleep 2; "
        f"grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l > {out}")
    proc = subprocess.run(pid1(*_init(init), "sh", "-c", script), capture_output=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert int(out.read_text()) == 0


APP_TRAPS = """
for s in HUP INT QUIT USR1 USR2 WINCH; do trap "echo $s >> {log}" $s; done
trap "echo TERM >> {log}; exit 0" TERM
echo ready >> {log}
while :; do sleep 0.05; done
"""


@pytest.mark.parametrize("init", INITS)
def test_signals_are_forwarded_to_the_group(init, tmp_path):
    need_root()
    log = tmp_path / "signals"
    proc = subprocess.Popen(pid1(*_init(init), "sh", "-c", APP_TRAPS.format(log=log)),
                            stderr=subprocess.PIPE)
    try:
        wait_for(lambda: log.exists() and "ready" in log.read_text(), what="the app")
        init_pid = wait_for(lambda: _child_of(proc.pid), what="the init's pid")
        sent = ["HUP", "QUIT", "USR1", "USR2", "WINCH"]
        if "tini" not in str(init):
            sent.append("INT")          # dcnet-init drains on INT like TERM (no hooks here)
        for name in sent[:5]:
            os.kill(init_pid, getattr(signal, f"SIG{name}"))
            wait_for(lambda n=name: n in log.read_text(), what=f"{name} at the app")
        os.kill(init_pid, signal.SIGTERM)
        assert proc.wait(30) == 0
        assert log.read_text().split()[-1] == "TERM"
    finally:
        reap(proc)


def _child_of(pid: int) -> int | None:
    """The first child of ``pid`` (unshare's forked child: the init, PID 1 inside)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            children = fh.read().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def stamp(log, word: str) -> str:
    return f"echo {word} >> {log}"


def test_lifecycle_registers_when_healthy_and_drains_before_stopping(tmp_path):
    """start hook only once the app listens; on TERM: drain hook, then the app's TERM,
    then the stop hook; the health endpoint says 503 while draining."""
    app_port, health_port = free_port(), free_port()
    log = tmp_path / "order"
    app = (f"sleep 1; echo listening >> {log}; "
           f"exec {sys.executable} -c \"import signal,socket,sys,time\n"
           f"s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
           f"s.bind(('127.0.0.1', {app_port})); s.listen()\n"
           f"def bye(*a):\n open('{log}','a').write('app-term\\\\n'); sys.exit(0)\n"
           f"signal.signal(signal.SIGTERM, bye)\n"
           f"while True: time.sleep(0.05)\"")
    proc = subprocess.Popen(
        [*INIT, "--check", f"tcp:{app_port}", "--interval", "0.1", "--rise", "2",
         "--health-port", str(health_port), "--health-address", "127.0.0.1",
         "--on-start", stamp(log, "start-hook"),
         "--on-drain", f"{stamp(log, 'drain-hook')}; sleep 0.5; {stamp(log, 'drained')}",
         "--on-stop", stamp(log, "stop-hook"), "--", "sh", "-c", app],
        stderr=subprocess.PIPE, text=True)
    health = f"http://127.0.0.1:{health_port}/health"
    try:
        assert wait_for(lambda: http_status(health), what="the health endpoint") == 503
        wait_for(lambda: http_status(health) == 200, what="healthy")
        wait_for(lambda: "start-hook" in log.read_text(), what="the start hook")
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "drain-hook" in log.read_text(), what="the drain hook")
        assert http_status(health) == 503            # draining: the ELB's checks fail too
        assert proc.wait(30) == 0
    finally:
        reap(proc)
    assert log.read_text().split() == ["listening", "start-hook", "drain-hook", "drained",
                                       "app-term", "stop-hook"]


def test_a_crash_deregisters_at_once(tmp_path):
    log = tmp_path / "order"
    proc = subprocess.run([*INIT, "--on-start", stamp(log, "start"), "--on-drain",
                           stamp(log, "drain"), "--on-stop", stamp(log, "stop"), "--",
                           "sh", "-c", "sleep 0.5; exit 3"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 3
    assert log.read_text().split() == ["start", "stop"]      # no drain: it is gone already


def test_an_app_that_ignores_term_is_killed_after_the_grace(tmp_path):
    proc = subprocess.Popen([*INIT, "--grace", "0.5", "--", "sh", "-c",
                             "trap '' TERM; while :; do sleep 0.05; done"],
                            stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(30) == 128 + 9
        assert "SIGKILL" in proc.stderr.read()
    finally:
        reap(proc)


def test_debug_mode_keeps_the_container_up_with_the_last_output(tmp_path):
    health_port = free_port()
    debug_file = tmp_path / "last"
    proc = subprocess.Popen([*INIT, "--debug", "--debug-file", str(debug_file),
                             "--health-port", str(health_port), "--health-address",
                             "127.0.0.1", "--", "sh", "-c", "echo boom-42 >&2; exit 5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: debug_file.exists() and "boom-42" in debug_file.read_text(),
                 what="the kept output")
        assert proc.poll() is None                           # still up, no restart loop
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/debug",
                                    timeout=2) as resp:
            assert "boom-42" in resp.read().decode()
        assert http_status(f"http://127.0.0.1:{health_port}/health") == 503
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 5
    finally:
        reap(proc)


def test_environment_injection_on_and_off(tmp_path):
    env_file = tmp_path / "platform.env"
    env_file.write_text("# injected\nexport DC_ZONE=east\nDC_QUOTED='a b'\n")
    script = 'echo "$DC_ZONE|$DC_QUOTED"'
    on = subprocess.run([*INIT, "--env-file", str(env_file), "--", "sh", "-c", script],
                        capture_output=True, text=True, timeout=30)
    off = subprocess.run([*INIT, "--env-file", str(env_file), "--inject-env", "off", "--",
                          "sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert on.stdout.strip() == "east|a b" and off.stdout.strip() == "|"


def test_a_bad_env_file_is_refused_with_its_line_and_nothing_starts(tmp_path):
    env_file = tmp_path / "bad.env"
    env_file.write_text("GOOD=1\n9BAD=2\n")
    marker = tmp_path / "started"
    proc = subprocess.run([*INIT, "--env-file", str(env_file), "--", "touch", str(marker)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and f"{env_file}:2:" in proc.stderr
    assert "Traceback" not in proc.stderr and not marker.exists()


def test_a_missing_command_exits_127():
    proc = subprocess.run([*INIT, "--", "/nonexistent/app"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 127 and "cannot start" in proc.stderr


def test_lifecycle_is_pushed_to_a_real_pushgateway(lab_factory, tmp_path):
    """With --pushgateway: a push once registered (registered 1, time to healthy) and a
    last one at exit (exit code 143 after the drain, drain time, no hook failure), into
    the group of its JOBNAME and instance; the Pushgateway runs in a lab namespace. The
    ELB hooks run ``/bin/true backend ...`` (``--elbctl``): the push is what is tested."""
    lab = lab_factory({"hosts": ["node"]})
    gateway = "127.0.0.1:9091"
    lab.start("node", ["prometheus-pushgateway", f"--web.listen-address={gateway}",
                       "--persistence.file="], name="pushgateway")

    def pushed() -> str:
        def get() -> str:
            try:
                with urllib.request.urlopen(f"http://{gateway}/metrics", timeout=3) as r:
                    return r.read().decode()
            except OSError:
                return ""
        return lab.call("node", get)

    wait_for(lambda: "pushgateway_build_info" in pushed(), what="the Pushgateway")
    job = "job.web_service.shop_cluster.prod_pdl.retail_owt.sre_cop.example"
    init = lab.start("node", [*INIT, "--pushgateway", gateway, "--elb-service", job,
                              "--elb-server", "10.0.0.1:80", "--elbctl", "/bin/true",
                              "--on-drain", "sleep 0.2", "--", "sleep", "600"], name="init")
    group = f'instance="{socket.gethostname()}",job="dcnet_init",jobname="{job}"'
    wait_for(lambda: f"dcnet_init_registered{{{group}}} 1" in pushed(),
             what="the push once registered")
    first = pushed()
    assert f"dcnet_init_healthy_seconds{{{group}}}" in first
    assert f"dcnet_init_exit_code{{{group}}}" not in first
    init.send_signal(signal.SIGTERM)
    assert init.wait(30) == 143
    last = pushed()
    assert f"dcnet_init_exit_code{{{group}}} 143" in last
    assert f"dcnet_init_drain_seconds{{{group}}}" in last
    assert f'dcnet_init_hook_failures{{{group},sequence="drain"}} 0' in last
