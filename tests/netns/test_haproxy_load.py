"""HAProxy under load in a lab: 20 reloads and 100 runtime changes, zero failed requests.

A real master-worker HAProxy runs in the lab's ``lb`` namespace in front of four real
HTTP servers; the load generator runs in ``client`` (bounded in time and count). The
test drives every change through the ``haproxy`` target (plan, then apply), checks
that each change went the way the plan said (runtime or reload), and at the end that no
request failed and that the running state equals the model.
"""

from __future__ import annotations

import random
import shutil
import tempfile

import pytest

from dcnet.haproxy.backend import HAProxyTarget
from dcnet.haproxy.paths import Paths
from dcnet.lab import haproxy_lab as hlab
from dcnet.target import apply_plan

pytestmark = pytest.mark.netns

SERVERS = [hlab.server_address(i) for i in range(1, 5)]
BACKEND = f"{hlab.JOB}:{hlab.SERVICE_PORT}"


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix="dcnet-hap-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def apply(backend, data):
    model = hlab.model_of(data)
    plan = backend.plan(model)
    result = apply_plan(backend, plan)
    assert result.ok, result.to_text()
    return plan


def counts(plan) -> tuple[int, int]:
    """(runtime changes, reloads) as the plan's first note says them."""
    note = plan.notes[0]
    runtime, reloads = note.split(" runtime changes, ")
    return int(runtime), int(reloads.split()[0])


def mutate(servers: dict[str, int], rng: random.Random) -> str:
    """One random runtime-only change that keeps at least one server taking traffic."""
    serving = [a for a, w in servers.items() if w > 0]
    absent = [a for a in SERVERS if a not in servers]
    choices = ["weight"]
    if absent:
        choices.append("add")
    if len(serving) > 1:
        choices += ["remove", "drain"]
    if any(w == 0 for w in servers.values()):
        choices.append("undrain")
    op = rng.choice(choices)
    if op == "add":
        servers[rng.choice(absent)] = rng.randint(1, 100)
    elif op == "remove":
        victim = rng.choice(list(servers))
        if servers[victim] > 0 and len(serving) == 1:
            victim = next(a for a in servers if a != victim)
        del servers[victim]
    elif op == "drain":
        servers[rng.choice(serving)] = 0
    elif op == "undrain":
        servers[rng.choice([a for a, w in servers.items() if w == 0])] = rng.randint(1, 100)
    else:
        address = rng.choice(list(servers))
        servers[address] = rng.choice([w for w in range(1, 101) if w != servers[address]])
    return op


def test_reloads_and_runtime_changes_under_load_lose_no_request(lab_factory, workdir):
    lab = lab_factory(hlab.topology(len(SERVERS)))
    paths = Paths(run_dir=f"{workdir}/run")
    servers = {SERVERS[0]: 10, SERVERS[1]: 20}
    data = hlab.model_data(servers)
    hlab.start_haproxy(lab, hlab.model_of(data), paths)
    backend = HAProxyTarget(run_dir=paths.run_dir, log=lambda text: None)
    load = hlab.LoadRun(lab, workdir, f"{hlab.LB_ADDRESS}:{hlab.SERVICE_PORT}",
                        duration=240, max_requests=2_000_000)
    rng = random.Random(6)
    ops: dict[str, int] = {}
    reloads = runtime_changes = 0
    try:
        for step in range(120):
            if step % 6 == 5:       # a change only a reload can make
                data = hlab.model_data(servers, timeout_server=60 + reloads + 1)
                plan = apply(backend, data)
                assert counts(plan) == (0, 1), plan.to_text()
                reloads += 1
            else:
                op = mutate(servers, rng)
                ops[op] = ops.get(op, 0) + 1
                data = hlab.model_data(servers, timeout_server=60 + reloads)
                plan = apply(backend, data)
                n_runtime, n_reloads = counts(plan)
                assert n_reloads == 0 and n_runtime >= 1, plan.to_text()
                runtime_changes += 1
    finally:
        result = load.stop()
    assert reloads == 20 and runtime_changes == 100
    assert set(ops) >= {"add", "remove", "drain", "weight"}, ops
    assert result["ok"] > 0
    assert result["failed"] == 0, result["reasons"]
    assert backend.runtime.proc().reloads == 20
    model = hlab.model_of(data)
    assert backend.plan(model).empty, backend.plan(model).to_text()
    running = {r.key: r.attrs() for r in backend.runtime.servers()
               if r.backend == BACKEND and not r.free}
    wanted = {f"{a}:{hlab.SERVER_PORT}": ({"state": "drain"} if w == 0 else
                                          {"state": "ready", "weight": w})
              for a, w in servers.items()}
    assert running == wanted
