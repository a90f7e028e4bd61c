"""``elbctl backend drain|remove --store`` waits like the local command (issue 14).

Real etcd (three members, TLS, authentication on: the service's own credentials), a real
HAProxy director under ``elbctl agent``, keep-alive real servers (bench/haproxy_peers.py)
and a client in the director's namespace holding ONE persistent HTTP/1.1 connection to
the VIP (TCP mode: the connection stays on its server). Draining that server through
etcd:

- with a long ``drain_deadline``, the command is still waiting while the director
  reports the connection (a ``draining`` report with 1 session left, read from etcd);
  once the client closes it, the command returns 0 ("safe", the director "drained");
- with ``drain_deadline: 2``, the director shuts the session down at the deadline and
  the command returns 4, saying so;
- ``remove --store`` drains, waits, then takes the record out (the server leaves HAProxy);
- with the agent stopped, the command gives up after the deadline + grace and names the
  director that did not answer (exit 4).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

import pytest

from dcnet.elbstore.drains import DrainReport
from dcnet.elbstore.keys import Keys
from dcnet.elbstore.store import ElbStore
from dcnet.lab import elbstore_lab as elab

pytestmark = pytest.mark.netns

PEERS = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "haproxy_peers.py")
RS1, RS2 = elab.server_address(1), elab.server_address(2)
PORT = 8081                  # the keep-alive peers (the lab's own servers listen on 8080)
BACKEND = f"{elab.JOB}:{elab.SERVICE_PORT}"


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix="dcnet-drain-etcd-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def model(deadline: int) -> dict:
    data = elab.model_data({RS1: 10, RS2: 10})
    data["haproxy"].update(drain_deadline=deadline, hard_stop_after=max(30, deadline))
    data["services"][0]["ports"][0]["target_port"] = PORT
    return data


def read_json(path: str) -> dict | None:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


class KeepAliveClient:
    """One persistent connection from the director's namespace to the VIP."""

    def __init__(self, elb: elab.ElbLab, name: str):
        self.out = os.path.join(elb.workdir, f"{name}.json")
        self.stop_file = os.path.join(elb.workdir, f"{name}.stop")
        self.popen = elb.lab.start("dir1", [
            sys.executable, PEERS, "client", f"{elab.VIP}:{elab.SERVICE_PORT}", self.out,
            self.stop_file, "--connections", "1", "--interval", "0.1"], name=name)
        self.elb = elb

    def server(self) -> str:
        """The real server that answered first (TCP mode: the connection's server)."""
        def answered():
            snap = read_json(self.out)
            return snap and next(iter(snap["per_server"]), None)
        return self.elb.wait(answered, what="the keep-alive client's first answers")

    def close(self) -> None:
        with open(self.stop_file, "w") as handle:
            handle.write("stop\n")
        self.popen.wait(30)


def report(client, server: str) -> DrainReport | None:
    kv = client.get(Keys().drain_report("dir1", elab.JOB, server))
    return DrainReport.decode(kv.value) if kv else None


def start_backend(elb: elab.ElbLab, action: str, server: str, name: str):
    """``elbctl backend ACTION JOB SERVER --store`` in the background (as svc)."""
    log = os.path.join(elb.workdir, f"{name}.log")
    argv = [sys.executable, "-m", "dcnet.cli.elbctl", "backend", action, elab.JOB, server,
            "--store", elb.url("svc")]
    return elb.lab.start(elab.REGISTRAR, argv, name=name, log_path=log), log


def finish(popen, log: str) -> tuple[int, str]:
    code = popen.wait(120)
    with open(log) as handle:
        return code, handle.read()


def test_drain_through_etcd_waits_for_the_directors_report(lab_factory, workdir):
    elb = elab.ElbLab.create(lab_factory, workdir, directors=1, servers=2)
    for i, address in ((1, RS1), (2, RS2)):
        elb.lab.start(f"rs{i}", [sys.executable, PEERS, "server", str(PORT), address,
                                 os.path.join(workdir, f"rs{i}.log")], name=f"rs{i}-ka")
    elb.setup_auth()
    etcd = elb.cluster.client(prefix=elab.PREFIX)          # as root
    v1 = model(deadline=120)
    assert elb.push(v1) == 1
    elb.start_director("dir1", v1, user="dir1")
    store = ElbStore(etcd, Keys())
    # the agent's first apply done (it may reload), so the client's connection is made
    # to the worker that will be drained
    elb.wait(lambda: [(s.model_revision, s.result) for s in store.statuses()] == [(1, "ok")],
             what="dir1 on revision 1")
    both = {f"{a}:{PORT}" for a in (RS1, RS2)}
    elb.wait(lambda: {k for k, v in elb.runtime("dir1").get(BACKEND, {}).items()
                      if v.get("state") == "ready"} == both, what="both servers ready")
    elb.wait(lambda: elb.serves("dir1"), what="the VIP answering")

    # 1. the connection closes while the command waits: 0, safe
    client = KeepAliveClient(elb, "client1")
    busy = client.server()
    popen, log = start_backend(elb, "drain", busy, "drain-safe")
    seen = elb.wait(lambda: (r := report(etcd, busy)) and r.state == "draining"
                    and r.active >= 1 and r, what="dir1 reporting the open connection")
    assert popen.poll() is None, ("drain --store returned while a connection was open: "
                                  f"{finish(popen, log)}, client {read_json(client.out)}"
                                  + elb.agent_logs())
    assert elb.runtime("dir1")[BACKEND][f"{busy}:{PORT}"]["state"] == "drain"
    client.close()
    code, output = finish(popen, log)
    assert code == 0, output
    assert "safe:" in output and "dir1: drained" in output, output
    final = report(etcd, busy)
    assert final.state == "drained" and final.record == seen.record, final

    # 2. remove --store: drains (nothing left), waits, takes the record out
    code, output = finish(*start_backend(elb, "remove", busy, "remove"))
    assert code == 0, output
    assert "safe:" in output and "recorded as removed" in output, output
    elb.wait(lambda: f"{busy}:{PORT}" not in elb.runtime("dir1").get(BACKEND, {}),
             what="the removed server out of HAProxy")

    # 3. a short deadline: the director shuts the session down, the command says 4
    other = RS2 if busy == RS1 else RS1
    assert elb.push(model(deadline=2)) == 2
    elb.wait(lambda: [(s.model_revision, s.result) for s in store.statuses()] == [(2, "ok")],
             what="dir1 on revision 2")
    client = KeepAliveClient(elb, "client2")
    assert client.server() == other
    code, output = finish(*start_backend(elb, "drain", other, "drain-deadline"))
    assert code == 4, output
    assert "dir1: deadline" in output and "session(s) shut down" in output, output
    client.close()

    # 4. nobody answers: the agent is stopped; the command names the director
    for popen_agent in elb.agents.values():
        popen_agent.terminate()
        popen_agent.wait(30)
    code, output = finish(*start_backend(elb, "add", other, "add"))
    assert code == 0, output
    code, output = finish(*start_backend(elb, "drain", other, "drain-silent"))
    assert code == 4, output
    assert "no answer from dir1" in output and "dir1: did not answer" in output, output
