"""Benchmark (root): how fast a change in etcd is live on every director, and how many
etcd operations one change costs.

A lab with a 3-member TLS etcd cluster (authentication on, every party with its own
user) and N directors, each running its own HAProxy and ``elbctl agent --target
haproxy``. For each change the clock starts just before the write to etcd:

- push: a new model revision (one server's weight flips between 10 and 11: a runtime
  change on every HAProxy), written by ``ElbStore.push`` exactly as ``elbctl push`` does
  (the bench leaves out the CLI's Python start-up, measured separately once);
- backend add: ``ElbStore.change_backend`` as ``elbctl backend add|remove --store`` does,
  alternately adding and removing one server.

"Live" is when HAProxy's runtime state (``show servers state`` on each director's admin
socket, polled every 5 ms) shows the change, and when the agent's status key in etcd
says it applied it; the change is live everywhere when the last director has it.
etcd operations per change are counted on the client side (the writer's requests and
the agents' request counters from their status keys) and on the server side (unary
gRPC requests handled by all members, from each member's /metrics).

    sudo .venv/bin/python bench/etcd_propagation.py [--agents 2 10] [--changes 30]
"""

from __future__ import annotations

import argparse
import shutil
import ssl
import statistics
import tempfile
import time
import urllib.request

from dcnet.elbstore.bundle import collect
from dcnet.elbstore.keys import Keys
from dcnet.elbstore.store import CountingClient, ElbStore
from dcnet.lab import elbstore_lab as elab
from dcnet.lab.builder import Lab

RS1, RS2 = elab.server_address(1), elab.server_address(2)
BACKEND = f"{elab.JOB}:{elab.SERVICE_PORT}"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def server_ops(elb: elab.ElbLab) -> int:
    """Unary gRPC requests handled by all members so far (their /metrics)."""
    cert, key = elb.cluster.root_cert, elb.cluster.root_key

    def fetch(url: str) -> str:
        context = ssl.create_default_context(cafile=elb.cluster.ca)
        context.load_cert_chain(cert, key)
        with urllib.request.urlopen(url, context=context, timeout=5) as answer:
            return answer.read().decode()

    total = 0
    for endpoint in elb.cluster.endpoints:
        text = elb.lab.call(elab.SWITCH, fetch, endpoint + "/metrics")
        for line in text.splitlines():
            if line.startswith("grpc_server_handled_total{") and 'grpc_type="unary"' in line:
                total += int(float(line.rsplit(" ", 1)[1]))
    return total


def agent_ops(store: ElbStore, directors: list[str]) -> int:
    seen = {s.director: s for s in store.statuses()}
    return sum(sum(n for k, n in seen[d].etcd_ops.items() if k != "watch_responses")
               for d in directors)


def wait_live(elb: elab.ElbLab, store: ElbStore, started: float, want, revision: int,
              model_revision: int, timeout: float = 60.0):
    """Per director: (seconds until HAProxy shows it, seconds until its status says so)."""
    live: dict[str, float] = {}
    status: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(live) < len(elb.directors) or len(status) < len(elb.directors):
        now = time.perf_counter()
        for name in elb.directors:
            if name not in live:
                try:
                    if want(elb.runtime(name).get(BACKEND, {})):
                        live[name] = now - started
                except Exception:  # socket busy during a reload: poll again
                    pass
        if len(status) < len(elb.directors):
            for s in store.statuses():
                if s.director not in status and s.result == "ok" and \
                        s.revision >= revision and s.model_revision == model_revision:
                    status[s.director] = time.perf_counter() - started
        if time.monotonic() > deadline:
            raise RuntimeError(f"not live everywhere after {timeout}s: live {sorted(live)}, "
                               f"status {sorted(status)}" + elb.agent_logs())
        time.sleep(0.005)
    return live, status


def run(agents: int, changes: int, workdir: str) -> dict:
    labs: list[Lab] = []

    def factory(topology):
        lab = Lab(topology)
        lab.build()
        labs.append(lab)
        return lab

    try:
        elb = elab.ElbLab.create(factory, workdir, directors=agents, servers=2)
        elb.setup_auth()
        v1 = elab.model_data({RS1: 10})
        elb.push(v1)
        for name in elb.directors:
            elb.start_director(name, v1, user=name)
        admin = ElbStore(CountingClient(elb.cluster.client(
            user="admin", password=elb.passwords["admin"], prefix=elab.PREFIX)), Keys())
        watcher = ElbStore(CountingClient(elb.cluster.client(prefix=elab.PREFIX)), Keys())
        rs1, rs2 = f"{RS1}:{elab.SERVER_PORT}", f"{RS2}:{elab.SERVER_PORT}"
        elb.wait(lambda: all(elb.runtime(d).get(BACKEND) == {rs1: {"state": "ready",
                                                                   "weight": 10}}
                             for d in elb.directors)
                 and len([s for s in watcher.statuses() if s.model_revision == 1])
                 == agents, timeout=120.0, what="first convergence")
        # one CLI push, for the start-up cost the in-process figures leave out
        started = time.perf_counter()
        elb.elbctl(elab.SWITCH, "push", "-f", elb.write_model(v1), user="admin")
        cli_push = time.perf_counter() - started
        current = admin.current()[0]
        wait_live(elb, watcher, started, lambda s: s.get(rs1) == {"state": "ready",
                                                                   "weight": 10},
                  0, current)
        results = {}
        for kind in ("push", "backend"):
            everywhere, per_director, status_all = [], [], []
            agent_before = agent_ops(watcher, elb.directors)
            server_before = server_ops(elb)
            admin.client.counts.clear()
            polls_before = watcher.client.total()
            for i in range(changes):
                if kind == "push":
                    weight = 11 if i % 2 == 0 else 10
                    path = elb.write_model(elab.model_data({RS1: weight}), f"w{weight}.yaml")
                    collected = collect(path)
                    started = time.perf_counter()
                    record = admin.push(collected)
                    revision, model_revision = 0, record.revision

                    def want(servers, weight=weight):
                        return servers.get(rs1) == {"state": "ready", "weight": weight}
                else:
                    action = "add" if i % 2 == 0 else "remove"
                    started = time.perf_counter()
                    change = admin.change_backend(action, elab.JOB, RS2, 5)
                    revision, model_revision = change.revision, current

                    def want(servers, action=action):
                        return (rs2 in servers) == (action == "add")
                live, status = wait_live(elb, watcher, started, want, revision,
                                         model_revision)
                everywhere.append(max(live.values()))
                per_director += list(live.values())
                status_all.append(max(status.values()))
                if kind == "push":
                    current = model_revision
                time.sleep(0.3)   # let status writes settle before the next change
            time.sleep(1.0)
            writer_ops = admin.client.total()
            agents_delta = agent_ops(watcher, elb.directors) - agent_before
            # the bench's own status polling is left out of the server-side count
            server_delta = server_ops(elb) - server_before - (watcher.client.total()
                                                              - polls_before)
            results[kind] = {
                "everywhere": everywhere, "per_director": per_director,
                "status": status_all, "writer_ops": writer_ops / changes,
                "agent_ops": agents_delta / changes, "server_ops": server_delta / changes}
        results["cli_push"] = cli_push
        return results
    finally:
        for lab in reversed(labs):
            lab.teardown()


def report(agents: int, changes: int, results: dict) -> None:
    print(f"\n{agents} agents, {changes} changes of each kind "
          f"(p99 of {changes} samples is close to the maximum)")
    print(f"{'':42}{'median':>10}{'p99':>10}{'max':>10}")
    for kind, label in (("push", "push -> live on every director"),
                        ("backend", "backend add/remove -> live everywhere")):
        r = results[kind]
        for name, values in ((label, r["everywhere"]),
                             ("  per director (HAProxy state)", r["per_director"]),
                             ("  status key on every director", r["status"])):
            print(f"{name:42}{statistics.median(values) * 1000:>8.0f}ms"
                  f"{pct(values, 99) * 1000:>8.0f}ms{max(values) * 1000:>8.0f}ms")
        print(f"  etcd requests per change: writer {r['writer_ops']:.1f}, agents "
              f"{r['agent_ops']:.1f} ({r['agent_ops'] / agents:.1f} per agent), server-side "
              f"unary requests {r['server_ops']:.1f}")
    print(f"elbctl push as a command (Python start-up included), to live everywhere: "
          f"{results['cli_push'] * 1000:.0f}ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--changes", type=int, default=30)
    args = parser.parse_args()
    for agents in args.agents:
        workdir = tempfile.mkdtemp(prefix="dcnet-etcd-bench-")
        try:
            results = run(agents, args.changes, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        report(agents, args.changes, results)


if __name__ == "__main__":
    main()
