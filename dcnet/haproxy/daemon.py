"""Starting a master-worker HAProxy on a rendered model (for tests, benchmarks, the demo).

Production HAProxy is started by the host's service manager with the same command
line (:meth:`dcnet.haproxy.paths.Paths.master_argv`); this module renders the first
file, starts the master (optionally inside a network namespace) and waits until the
worker answers on the admin socket.
"""

from __future__ import annotations

import os
import subprocess
import time

from dcnet.haproxy import limits
from dcnet.haproxy.check import ConfigInvalid, render_valid
from dcnet.haproxy.paths import Paths
from dcnet.haproxy.runtime import HAProxyUnavailable, Runtime
from dcnet.model import Model
from dcnet.sysio import proc
from dcnet.sysio.files import atomic_write


def write_initial(model: Model, paths: Paths) -> None:
    """Render and validate the model into ``paths.config``; any bad service is an error."""
    os.makedirs(paths.run_dir, mode=0o700, exist_ok=True)
    checked = render_valid(model, paths)
    if checked.bad:
        raise ConfigInvalid([f"{name}: {'; '.join(errors)}"
                             for name, errors in checked.bad.items()], "the model")
    too_many = limits.problem(checked.rendered.text)   # the master will be our child
    if too_many:
        raise ConfigInvalid([too_many], "the model")
    atomic_write(paths.config, checked.rendered.text)


def start(paths: Paths, netns: str | None = None, log_path: str | None = None,
          timeout: float = 15.0) -> subprocess.Popen:
    """Start the master (foreground, own process group) and wait for its worker."""
    popen = proc.start(paths.master_argv(), netns=netns, log_path=log_path)
    try:
        wait_ready(paths, popen, timeout)
    except BaseException:
        proc.stop(popen, 3.0)
        raise
    return popen


def wait_ready(paths: Paths, popen: subprocess.Popen | None = None,
               timeout: float = 15.0) -> None:
    runtime = Runtime(paths.admin_socket, paths.master_socket)
    deadline = time.monotonic() + timeout
    while True:
        if popen is not None and popen.poll() is not None:
            raise HAProxyUnavailable(f"HAProxy exited with {popen.returncode} at start")
        try:
            if runtime.proc().current_worker is not None:
                runtime.servers()
                return
        except HAProxyUnavailable:
            pass
        if time.monotonic() > deadline:
            raise HAProxyUnavailable(f"HAProxy not ready within {timeout}s")
        time.sleep(0.05)
