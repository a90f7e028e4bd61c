"""dcnet/lab/pytest_exit_guard.py, run for real: an inner pytest session whose test leaks a
non-daemon thread, or a process holding the session's output pipe, still ends (as a
failure naming the leak) instead of keeping its reader waiting."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from dcnet.lab.pytest_exit_guard import running

WAIT = 120.0    # bounds the inner session (a loaded host); nothing asserts a duration

LEAK_THREAD = """
import threading
import time

def forgotten_reader():
    time.sleep(3600)

def test_leaks_a_thread():
    threading.Thread(target=forgotten_reader, name="forgotten-reader").start()
"""

LEAK_PROCESS = """
import subprocess

def test_leaks_a_process():
    subprocess.Popen(["sleep", "3600"])         # inherits the session's stdout (-s)
"""

CLEAN = """
import threading

def test_stops_its_thread():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    stop.set()
    thread.join()
"""


def _inner(tmp_path, source: str, *options: str) -> subprocess.CompletedProcess:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(source))
    # stdout is a pipe, as under CI: communicate() returns only once every writer closed it
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-p", "dcnet.lab.pytest_exit_guard", *options, "test_inner.py"],
        cwd=tmp_path, env={**os.environ, "DCNET_EXIT_GUARD_GRACE": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=WAIT)


def test_a_leaked_non_daemon_thread_ends_the_run_as_a_failure(tmp_path):
    done = _inner(tmp_path, LEAK_THREAD)
    assert "1 passed" in done.stdout
    assert done.returncode != 0, done.stdout
    assert "test_inner.py::test_leaks_a_thread: non-daemon thread 'forgotten-reader'" \
        in done.stdout
    assert "in forgotten_reader" in done.stdout                      # its stack


def test_a_process_holding_the_output_pipe_is_named_and_terminated(tmp_path):
    done = _inner(tmp_path, LEAK_PROCESS, "-s")        # not captured: the pipe itself
    assert "1 passed" in done.stdout
    assert done.returncode != 0, done.stdout
    assert "holds the run's output: sleep 3600" in done.stdout
    pid = int(done.stdout.split("process ", 1)[1].split()[0])
    assert not running(pid)         # gone, or a zombie not yet reaped by its new parent


def test_a_clean_run_is_left_alone(tmp_path):
    done = _inner(tmp_path, CLEAN)
    assert done.returncode == 0, done.stdout
    assert "exit guard" not in done.stdout


def test_a_process_the_run_did_not_start_is_never_touched(tmp_path):
    # the run's caller may hold the pipe too (a sibling here): not the run's to end
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(CLEAN))
    read_end, write_end = os.pipe()
    sibling = subprocess.Popen(["sleep", "3600"], stdout=write_end)
    try:
        inner = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "-p", "dcnet.lab.pytest_exit_guard", "test_inner.py"],
            cwd=tmp_path, stdout=write_end, stderr=subprocess.STDOUT)
        os.close(write_end)
        assert inner.wait(WAIT) == 0
        assert sibling.poll() is None
    finally:
        sibling.kill()
        sibling.wait()
    with os.fdopen(read_end, "rb") as output:
        text = output.read().decode()
    assert "1 passed" in text and "exit guard" not in text
