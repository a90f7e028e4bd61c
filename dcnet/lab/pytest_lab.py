"""Pytest plugin for network-namespace labs.

It owns: the janitor sweep at session start (leftovers of killed runs), SIGTERM
handled like Ctrl-C during the session (so lab fixtures are torn down), the
skip of ``netns``-marked tests when not root, the guard that ``unit`` tests do
not build labs, the ``lab_factory`` fixture (build Labs from a Topology or a
dict; all torn down after the test, even when it fails) and the ready-made
``two_hosts`` fixture (h1 10.250.0.1/24 eth0 <-> h2 10.250.0.2/24 eth0).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from dcnet.lab.builder import Lab, LabTeardownError
from dcnet.lab.topology import Topology

NOT_ROOT_REASON = "netns test: needs root (network namespaces, veth, bridges); run as root"

_SAVED_SIGTERM = pytest.StashKey[Any]()

TWO_HOSTS = {
    "hosts": ["h1", "h2"],
    "links": [
        {
            "a": {"host": "h1", "ifname": "eth0", "addresses": ["10.250.0.1/24"]},
            "b": {"host": "h2", "ifname": "eth0", "addresses": ["10.250.0.2/24"]},
        }
    ],
}


def is_root() -> bool:
    return os.geteuid() == 0


def pytest_sessionstart(session: pytest.Session) -> None:
    """Sweep leftovers of earlier killed runs before any test builds a lab."""
    if not is_root() or hasattr(session.config, "workerinput"):
        return
    from dcnet.lab import janitor

    report = janitor.sweep()
    for line in report.lines():
        if not line.startswith("left live run"):
            sys.stderr.write(f"dcnet lab janitor: {line}\n")


def pytest_configure(config: pytest.Config) -> None:
    """Treat SIGTERM like Ctrl-C so pytest stops and tears every lab fixture down."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        config.stash[_SAVED_SIGTERM] = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SAVED_SIGTERM in config.stash:
        signal.signal(signal.SIGTERM, config.stash[_SAVED_SIGTERM])


_OWNER = os.getpid()


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    if os.getpid() != _OWNER:          # a fork that inherited the handler: end it
        from dcnet.sysio.proc import die_by_default

        die_by_default(signum)
    raise KeyboardInterrupt("SIGTERM")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip netns-marked tests with a clear reason when not running as root."""
    if is_root():
        return
    skip = pytest.mark.skip(reason=NOT_ROOT_REASON)
    for item in items:
        if item.get_closest_marker("netns") is not None:
            item.add_marker(skip)


LabFactory = Callable[..., Lab]


@pytest.fixture
def lab_factory(request: pytest.FixtureRequest) -> Iterator[LabFactory]:
    """Call with a Topology or dict (and Lab keyword arguments) to get a built Lab."""
    if request.node.get_closest_marker("unit") is not None:
        pytest.fail("tests marked 'unit' must not build network-namespace labs")
    if not is_root():
        pytest.skip(NOT_ROOT_REASON)
    labs: list[Lab] = []

    def build(topology: Topology | Mapping[str, Any], **kwargs: Any) -> Lab:
        lab = Lab(topology, **kwargs)
        lab.build()
        labs.append(lab)
        return lab

    yield build
    _teardown_all(labs)


def _teardown_all(labs: list[Lab]) -> None:
    errors = []
    for lab in reversed(labs):
        try:
            lab.teardown()
        except LabTeardownError as exc:
            errors.append(str(exc))
    if errors:
        pytest.fail("lab teardown failed:\n" + "\n".join(errors))


@pytest.fixture
def two_hosts(lab_factory: LabFactory) -> Lab:
    """Hosts h1 (10.250.0.1) and h2 (10.250.0.2) joined by one veth named eth0 on both."""
    return lab_factory(TWO_HOSTS)
