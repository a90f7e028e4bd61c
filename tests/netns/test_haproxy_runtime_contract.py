"""The HAProxy runtime API contract: what dcnet.haproxy relies on from ``Runtime``.

Every test runs twice: against :class:`dcnet.haproxy.fake.FakeRuntime` built from the
rendered file (pure), and against :class:`dcnet.haproxy.runtime.Runtime` talking to a
real HAProxy started on that file in a lab namespace (marker netns; root). Assertions
are on the state read back (``show servers state``, ``show proc``), never on the commands
sent, so the fake the unit tests use stays honest.
"""

from __future__ import annotations

import shutil
import tempfile

import pytest

from dcnet.haproxy.daemon import write_initial
from dcnet.haproxy.fake import FakeRuntime
from dcnet.haproxy.paths import Paths
from dcnet.haproxy.runtime import Runtime, RuntimeCommandError, parse_servers_state
from dcnet.lab import haproxy_lab as hlab

RS1, RS2 = hlab.server_address(1), hlab.server_address(2)
BACKEND = f"{hlab.JOB}:{hlab.SERVICE_PORT}"
PORT = hlab.SERVER_PORT


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.netns)])
def runtime(request):
    """HAProxy running one service over rs1 (weight 10) with four free slots s2..s5."""
    workdir = tempfile.mkdtemp(prefix="dcnet-hapc-")
    request.addfinalizer(lambda: shutil.rmtree(workdir, ignore_errors=True))
    paths = Paths(run_dir=f"{workdir}/run")
    model = hlab.model_of(hlab.model_data({RS1: 10}))
    if request.param == "fake":
        write_initial(model, paths)
        return FakeRuntime(config_path=paths.config)
    lab = request.getfixturevalue("lab_factory")(hlab.topology(1))
    hlab.start_haproxy(lab, model, paths)
    return Runtime(paths.admin_socket, paths.master_socket)


def slots(runtime) -> dict[str, tuple]:
    """slot -> (key, attrs) of a filled slot, or None when free."""
    return {r.server: None if r.free else (r.key, r.attrs())
            for r in runtime.servers(BACKEND)}


def key(address: str) -> str:
    return f"{address}:{PORT}"


def test_rendered_slots_are_read_back(runtime):
    assert slots(runtime) == {"s1": (key(RS1), {"state": "ready", "weight": 10}),
                              "s2": None, "s3": None, "s4": None, "s5": None}
    assert {r.backend for r in runtime.servers()} == {BACKEND}


def test_a_free_slot_takes_a_server(runtime):
    runtime.set_server(BACKEND, "s2", address=RS2, port=PORT)
    assert slots(runtime)["s2"] is None          # an address alone keeps it in maintenance
    runtime.set_server(BACKEND, "s2", weight=30, state="ready")
    assert slots(runtime)["s2"] == (key(RS2), {"state": "ready", "weight": 30})
    assert slots(runtime)["s1"] == (key(RS1), {"state": "ready", "weight": 10})


def test_drain_fills_a_free_slot_and_ready_restores_the_weight(runtime):
    runtime.set_server(BACKEND, "s3", address=RS2, port=PORT)
    runtime.set_server(BACKEND, "s3", state="drain")
    assert slots(runtime)["s3"] == (key(RS2), {"state": "drain"})
    runtime.set_server(BACKEND, "s3", weight=7)      # still draining
    assert slots(runtime)["s3"] == (key(RS2), {"state": "drain"})
    runtime.set_server(BACKEND, "s3", state="ready")
    assert slots(runtime)["s3"] == (key(RS2), {"state": "ready", "weight": 7})


def test_weight_zero_reads_as_drain_and_maint_frees_the_slot(runtime):
    runtime.set_server(BACKEND, "s1", weight=0)
    assert slots(runtime)["s1"] == (key(RS1), {"state": "drain"})
    runtime.set_server(BACKEND, "s1", weight=5)
    assert slots(runtime)["s1"] == (key(RS1), {"state": "ready", "weight": 5})
    runtime.set_server(BACKEND, "s1", state="drain")
    runtime.set_server(BACKEND, "s1", state="maint")
    assert slots(runtime)["s1"] is None
    row = next(r for r in runtime.servers(BACKEND) if r.server == "s1")
    assert (row.address, row.port) == (RS1, PORT)    # the address stays with the slot


def test_unknown_backend_or_server_is_refused_and_changes_nothing(runtime):
    before = slots(runtime)
    with pytest.raises(RuntimeCommandError, match="No such backend"):
        runtime.set_server("no-such:80", "s1", weight=3)
    with pytest.raises(RuntimeCommandError, match="No such server"):
        runtime.set_server(BACKEND, "s9", weight=3)
    with pytest.raises(RuntimeCommandError):
        runtime.servers("no-such:80")
    assert slots(runtime) == before


def test_shutdown_sessions_is_accepted_and_counted(runtime):
    before = runtime.commands
    assert runtime.command(f"shutdown sessions server {BACKEND}/s1") == ""
    assert runtime.commands == before + 1
    runtime.command("show servers state")           # reads are not counted
    assert runtime.commands == before + 1
    with pytest.raises(RuntimeCommandError, match="No such server"):
        runtime.command(f"shutdown sessions server {BACKEND}/s9")


def test_state_text_parses_back_to_the_same_rows(runtime):
    runtime.set_server(BACKEND, "s2", address=RS2, port=PORT, weight=4, state="ready")
    assert parse_servers_state(runtime.command("show servers state")) == runtime.servers()


def test_reload_starts_a_new_worker_on_the_file(runtime):
    before = runtime.proc()
    runtime.set_server(BACKEND, "s2", address=RS2, port=PORT, weight=4, state="ready")
    info = runtime.reload()
    assert info.reloads == before.reloads + 1 and info.failed == before.failed
    assert info.current_worker is not None
    assert info.current_worker not in {pid for pid, _ in before.workers}
    assert runtime.proc().reloads == before.reloads + 1
    assert runtime.reloads == 1
    # no server-state file was saved: the new worker runs the file's slots
    assert slots(runtime) == {"s1": (key(RS1), {"state": "ready", "weight": 10}),
                              "s2": None, "s3": None, "s4": None, "s5": None}
