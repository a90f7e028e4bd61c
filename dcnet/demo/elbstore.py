"""The ELB-on-etcd step of ``dcnet-demo --store etcd`` (skipped with the file store).

Its own small lab (``dcnet.lab.elbstore_lab``): a three-member TLS etcd cluster with
authentication on, two HAProxy directors each running ``elbctl agent --target haproxy``
with its own etcd user, real servers, and a registrar host standing for "a container on
another machine". It pushes a model, registers a backend with the service's own
credentials, shows both directors converge and report their status into etcd, and that
the service's credentials cannot push a model.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile

from dcnet.lab.builder import Lab


def demo(model, lab, report) -> None:
    """The demo hook; ``model`` and ``lab`` (the ELB lab) are not needed here."""
    if getattr(report, "store", "file") != "etcd":
        return
    report.section("ELB on etcd: two HAProxy directors follow pushed models and "
                   "registrations")
    workdir = tempfile.mkdtemp(prefix="dcnet-elb-etcd-demo-")
    try:
        with contextlib.ExitStack() as stack:
            def lab_factory(topology):
                return stack.enter_context(Lab(topology))
            _run(lab_factory, workdir, report)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(lab_factory, workdir: str, report) -> None:
    from dcnet.elbstore.keys import Keys
    from dcnet.elbstore.store import ElbStore
    from dcnet.lab import elbstore_lab as elab

    elb = elab.ElbLab.create(lab_factory, workdir, directors=2, servers=2)
    report.check(True, f"etcd cluster (TLS) up: {', '.join(elb.cluster.endpoints)}")
    elb.setup_auth()
    report.check(True, "etcd users and roles: admin, dir1, dir2 (own status only), svc "
                       "(its service's backends only); authentication on")
    rs1, rs2 = elab.server_address(1), elab.server_address(2)
    first = elab.model_data({rs1: 10})
    revision = elb.push(first)
    report.check(revision == 1, f"elbctl push (as admin): model revision {revision}")
    for name in elb.directors:
        elb.start_director(name, first, user=name)
    backend = f"{elab.JOB}:{elab.SERVICE_PORT}"
    store = ElbStore(elb.cluster.client(prefix=elab.PREFIX), Keys())

    def converged(servers: set[str]):
        def check():
            statuses = {s.director: s for s in store.statuses()}
            return all(statuses.get(d) is not None and statuses[d].result == "ok"
                       and set(elb.runtime(d).get(backend, {})) == servers
                       for d in elb.directors)
        return check

    one = {f"{rs1}:{elab.SERVER_PORT}"}
    elb.wait(converged(one), timeout=90.0, what="both directors on the pushed model")
    report.check(all(elb.serves(d) for d in elb.directors),
                 f"both directors serve {elab.VIP}:{elab.SERVICE_PORT} from {rs1}")
    done = elb.elbctl(elab.REGISTRAR, "backend", "add", elab.JOB, rs2, "--weight", "5",
                      user="svc")
    print(f"    reg$ elbctl backend add {elab.JOB} {rs2} --weight 5: {done.stdout.strip()}")
    both = one | {f"{rs2}:{elab.SERVER_PORT}"}
    elb.wait(converged(both), timeout=90.0, what="the registered backend on both directors")
    report.check(True, f"{rs2} registered from another machine is live on both directors")
    status = elb.elbctl(elab.SWITCH, "status", user="admin").stdout
    for line in status.strip().splitlines():
        print(f"    {line}")
    refused = elb.elbctl(elab.REGISTRAR, "push", "-f", elb.write_model(first, "svc.yaml"),
                         user="svc", check=False)
    report.check(refused.returncode == 4, "the service's credentials cannot push a model: "
                                          f"{refused.stderr.strip()[:90]}")
