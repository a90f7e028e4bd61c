"""Garbage written to etcd by a service's own credential (issue #15), against a real
three-member etcd cluster (TLS, authentication on) and two real HAProxy directors whose
``elbctl agent`` processes follow it.

The service's user may write anything under its own JOBNAME's backend keys: values that
are not JSON, not UTF-8, nested 100,000 deep, 1 MiB long, of the wrong types or out of
range, and keys that are not addresses. No director's agent crashes or stalls: a backend
registered afterwards the ordinary way reaches both directors' HAProxy, the garbage is
ignored (and logged, key named), and the agents are still running.
"""

from __future__ import annotations

import json
import shutil
import tempfile

import pytest

from dcnet.elbstore.keys import Keys
from dcnet.lab import elbstore_lab as elab
from tests.netns.test_elb_etcd import converged, ready

pytestmark = pytest.mark.netns

RS1, RS2 = elab.server_address(1), elab.server_address(2)
KEYS = Keys()
GOOD = json.dumps({"weight": 3, "state": "active"}).encode()
GARBAGE = [
    ("10.77.0.1", b"nonsense"),
    ("10.77.0.2", b'{"weight": 1, "state": "\xff\xfe"}'),
    ("10.77.0.3", b'{"weight": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("10.77.0.4", json.dumps({"weight": 1, "state": "x" * (1 << 20)}).encode()),
    ("10.77.0.5", b'{"weight": true, "state": "active"}'),
    ("10.77.0.6", b'{"weight": 100000000, "state": "active"}'),
    ("10.77.0.7", b'{"weight": -1, "state": "active"}'),
    ("10.77.0.8", b'["active", 1]'),
    ("10.77.0.9", b'{"weight": 1, "state": "active", "unknown": {"deep": [1, 2]}}'),
    ("evil.example", GOOD),
    ("10.77.0.10:99999", GOOD),
    ("x" * 3000, GOOD),
]


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix="dcnet-hostile-etcd-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_service_garbage_neither_crashes_nor_stalls_a_director(lab_factory, workdir):
    elb = elab.ElbLab.create(lab_factory, workdir, directors=2, servers=2)
    elb.setup_auth()
    v1 = elab.model_data({RS1: 10})
    assert elb.push(v1) == 1
    for name in elb.directors:
        elb.start_director(name, v1, user=name)
    rs1, rs2 = f"{RS1}:{elab.SERVER_PORT}", f"{RS2}:{elab.SERVER_PORT}"
    elb.wait(converged(elb, 1, {rs1: ready(10)}), what="both directors on revision 1")

    svc = elb.cluster.client(user="svc", password=elb.passwords["svc"], prefix=elab.PREFIX)
    try:
        for ident, value in GARBAGE:
            svc.put(KEYS.backend(elab.JOB, ident), value)
    finally:
        svc.close()
    done = elb.elbctl(elab.REGISTRAR, "backend", "add", elab.JOB, RS2, "--weight", "5",
                      user="svc")
    revision = int(done.stdout.split("etcd revision ")[1].split(")")[0])
    # 10.77.0.9 (unknown fields ignored) is a valid registration: HAProxy lists it too
    extra = f"10.77.0.9:{elab.SERVER_PORT}"
    elb.wait(converged(elb, 1, {rs1: ready(10), rs2: ready(5), extra: ready(1)}, revision),
             timeout=90.0, what="the backend registered after the garbage, on both")
    assert all(popen.poll() is None for popen in elb.agents.values()), elb.agent_logs()
    logs = elb.agent_logs(tail=200_000)
    assert "Traceback" not in logs
    assert "ignored: " in logs and "not a backend key" in logs
