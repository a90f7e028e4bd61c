"""Running BIND inside lab namespaces: rndc key, starting named, querying it with dig.

Used by the netns tests, the benchmark and the demo. named runs in the foreground
(``-g``) as a lab process, so the lab stops it at teardown; every query goes from a lab
host to a named inside the lab.
"""

from __future__ import annotations

import os
import subprocess
import time

from dcnet.dns.bind import NamedDown, Rndc
from dcnet.dns.render import NAMED_CONF
from dcnet.lab.builder import Lab
from dcnet.sysio import proc


def make_rndc_key(directory: str, name: str = "rndc-key") -> str:
    """Create ``directory/rndc.key`` (once) and return its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "rndc.key")
    if not os.path.exists(path):
        proc.run(["rndc-confgen", "-a", "-c", path, "-k", name])
    return path


def start_named(lab: Lab, host: str, directory: str, rndc: Rndc, name: str = "named",
                timeout: float = 20.0) -> subprocess.Popen:
    """Start named on ``directory/named.conf`` inside ``host``; return once rndc answers."""
    popen = lab.start(host, ["named", "-c", os.path.join(directory, NAMED_CONF), "-u", "root",
                             "-g"], name=name)
    wait_for_rndc(popen, rndc, timeout)
    return popen


def wait_for_rndc(popen: subprocess.Popen, rndc: Rndc, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if popen.poll() is not None:
            raise RuntimeError(f"named exited with {popen.returncode} before answering rndc")
        try:
            rndc.status()
            return
        except NamedDown:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def dig(lab: Lab, host: str, server: str, name: str, rtype: str = "A",
        source: str | None = None, port: int = 53) -> list[str]:
    """The answers (``+short``) a query from ``host`` gets; raises when dig fails."""
    argv = ["dig", "+short", "+time=2", "+tries=2", "-p", str(port), f"@{server}", name, rtype]
    if source:
        argv[1:1] = ["-b", source]
    return lab.run(host, argv).stdout.split()


def soa_serial(lab: Lab, host: str, server: str, zone: str) -> int:
    fields = dig(lab, host, server, zone, "SOA")
    if len(fields) < 3:
        raise RuntimeError(f"no SOA for {zone} from {server} seen by {host}: {fields}")
    return int(fields[2])
