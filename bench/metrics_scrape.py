"""Benchmark: the cost of one scrape of ``elbctl exporter``'s ELB collector at 10,000
services x 10 real servers (HAProxy source), per cardinality mode, and the exporter's
memory with its model loaded in-process (as before) and in a child (as now).

Each row is an exporter process (``--serve``): ``elbctl``'s imports, the model labelling
the series (``--load inprocess``: ``load_model`` in the process; ``child``:
:class:`IsolatedWatch`, as ``elbctl exporter`` does now), and the real
``dcnet.metrics.server`` and ``ELBCollector`` reading ``show stat`` over a UNIX socket
that this process serves like HAProxy's runtime API (an answer in HAProxy 2.6's CSV
layout for 10,000 backends of 10 servers and 4 free slots, generated here once: starting
a real HAProxy with 140,000 server slots is left out, see docs/metrics.md). This process
scrapes it ``--scrapes`` times back to back after one warm-up, then asks it for one drift
check (the model only: no target to plan), and reports per row: the scrape duration
(HTTP round trip, whole body read), the exporter's CPU seconds per scrape (utime+stime
from /proc, and that as a share of one core at a 15 s scrape interval), its RSS once the
model is loaded (before any scrape), after the scrapes, its peak (VmHWM), the peak RSS of
the loader child (0 in-process), the drift check's CPU seconds (its children included)
and the RSS after it, the body size and the number of series; and per mode the sha256 of
every row's last body (the same bytes from every tree and load, or DIFFERENT). Rows
run ``--runs`` times, interleaved (every load and mode once, then again), and print
medians; each ``child`` row is followed by its ratios to the ``inprocess`` row of the
same invocation.

    .venv/bin/python bench/metrics_scrape.py [--services 10000] [--servers 10]
        [--scrapes 7] [--runs 3] [--modes auto,server] [--loads inprocess,child]
        [--trees before=/tmp/wt-old,after=.]

``--trees`` runs every row once per source tree (the exporter child imports dcnet from
that directory through ``PYTHONPATH``; the bench itself is this file), interleaved, for
a before/after comparison in one invocation: ``git worktree add /tmp/wt-old COMMIT``.
The HAProxy answer is read as the tree's exporter reads it: line by line
(``dcnet.metrics.haproxy_stat.stream``) where the tree has it, else whole
(``dcnet.haproxy.runtime.send``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HEADER = ("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,"
          "eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,"
          "qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,"
          "check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,"
          "hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,"
          "comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,"
          "ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,"
          "check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,"
          "conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,"
          "cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,"
          "ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,"
          "agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,"
          "ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,"
          "h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_err,"
          "h2_detected_strm_protocol_err,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,"
          "h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,")
COLUMNS = HEADER[2:].split(",")
SPARE = 4


def job(n: int) -> str:
    return f"job.svc{n}_service.svc{n}_cluster.prod_pdl.retail_owt.sre_cop.example"


def row(**values) -> str:
    return ",".join(str(values.get(c, "")) for c in COLUMNS)


def show_stat(services: int, servers: int, server_rows: bool = True) -> str:
    """A ``show stat -1 6 -1`` answer for ``services`` backends of ``servers`` filled
    slots (plus SPARE free ones); ``-1 2 -1`` (backend rows only) without
    ``server_rows``."""
    lines = [HEADER]
    for n in range(services):
        name = f"{job(n)}:80"
        for s in range(servers + SPARE if server_rows else 0):
            filled = s < servers
            lines.append(row(
                pxname=name, svname=f"s{s + 1}", scur=int(filled), stot=100 * filled,
                bin=12345, bout=67890, status="UP" if filled else "MAINT", weight=1, act=1,
                type=2, addr=f"10.{n // 256 % 256}.{n % 256}.{s + 1}:8080" if filled
                else "0.0.0.0:0", check_status="L4OK" if filled else "", mode="tcp"))
        lines.append(row(pxname=name, svname="BACKEND", scur=servers, stot=100 * servers,
                         bin=1, bout=1, status="UP", weight=servers, act=servers, type=1,
                         mode="tcp"))
    return "\n".join(lines) + "\n\n"


def model_text(services: int, servers: int, forward: str | None = None,
               check: str | None = None) -> str:
    """The exporter's model: ``services`` services of ``servers`` real servers, port 80
    (forwarded as the model's default, dr, unless ``forward`` says, e.g. ``nat``: what
    the nft target renders without ``--nft-dr``, to port 8080), health checked as the
    model's default unless ``check`` names the type (``none``: HAProxy then needs no
    descriptor per server)."""
    import yaml

    port = {"port": 80} if forward is None else {"port": 80, "forward": forward,
                                                   "target_port": 8080}
    data = {"version": 1, "carriers": [{"name": "bgp", "uplink": "bgp0",
                                        "gateway": "203.0.113.1", "table": 104,
                                        "vip_ranges": ["10.128.0.0/9"], "default": True}],
            "services": [{"job": job(n), "vips": {"bgp": f"10.{128 + n // 65536}."
                                                  f"{n // 256 % 256}.{n % 256}"},
                          "ports": [dict(port)],    # a copy: one object would be an alias
                          "real_servers": [{"address": f"10.{n // 256 % 256}.{n % 256}."
                                                       f"{s + 1}"}
                                           for s in range(servers)],
                          **({"health_check": {"type": check}} if check else {})}
                         for n in range(services)]}
    return yaml.safe_dump(data)


def labelling(args, path: str):
    """The exporter's :class:`Watch` of the model, loaded as ``--load`` says: ``child``
    as ``elbctl exporter`` does now (:class:`IsolatedWatch`: the model loaded in a
    child, only its index kept), ``inprocess`` as it did before (``load_model`` here).
    No target: its drift check is the model's cost alone (no plan)."""
    from dcnet.cli.elbctl_metrics import IsolatedWatch, Watch
    if args.load == "inprocess":
        from dcnet.model import load_model
        return Watch({}, load_model(path), interval=0)
    return IsolatedWatch({}, path, interval=0, vips=False)   # no IPVS source


def serve(args) -> None:
    """The child: ``elbctl exporter``'s imports, its labelling, the ELB collector over
    the parent's ``show stat`` socket, served on loopback."""
    import resource

    import dcnet.cli.elbctl  # noqa: F401  (what `elbctl exporter` has imported)
    from dcnet.metrics import haproxy_stat
    from dcnet.metrics.cardinality import Bound
    from dcnet.metrics.elb import ELBCollector
    from dcnet.metrics.exposition import Exposition
    from dcnet.metrics.server import serve as start

    # as `elbctl exporter` reads it: line by line where the tree can (haproxy_stat.stream),
    # else the whole answer (dcnet.haproxy.runtime.send, before)
    read = getattr(haproxy_stat, "stream", None)
    if read is None:
        from dcnet.haproxy.runtime import send as read
    if args.load == "child":
        from dcnet.metrics import isolated
        isolated.one_heap()                # as `elbctl exporter` does now
    watch = labelling(args, args.model)
    registry = Exposition()
    registry.register(ELBCollector(
        model=lambda: watch.current, bound=Bound(mode=args.mode),
        haproxy_stat=lambda which: read(args.socket, f"show stat {which}", timeout=120)))
    server = start(registry, f"127.0.0.1:{args.port}")
    loader_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"ready {loader_peak:.1f}", flush=True)
    for _ in sys.stdin:                    # "check": one drift check; EOF: stop
        before = [getattr(resource.getrusage(who), f) for who in (
            resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for f in ("ru_utime", "ru_stime")]
        watch.check()
        after = [getattr(resource.getrusage(who), f) for who in (
            resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for f in ("ru_utime", "ru_stime")]
        print(f"{sum(after) - sum(before):.3f}", flush=True)
    server.close()


class FakeHAProxy:
    """A runtime API socket answering ``show stat <filter>`` with :func:`show_stat`'s
    text (generated once per filter, in this process: the exporter's memory is only what
    it reads, as with a real HAProxy)."""

    def __init__(self, path: str, services: int, servers: int):
        from dcnet.metrics.haproxy_stat import BACKENDS_ONLY

        self.path, self.answers = path, {}
        self.make = lambda which: show_stat(services, servers, which != BACKENDS_ONLY)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                request = b""
                while chunk := conn.recv(4096):
                    request += chunk
                which = request.decode().strip().removeprefix("show stat ")
                if which not in self.answers:
                    self.answers[which] = self.make(which).encode()
                conn.sendall(self.answers[which])

    def close(self) -> None:
        self.sock.close()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> tuple[float, float]:
    values = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values["VmRSS"], values["VmHWM"]


def measure(args, mode: str, load: str, model_path: str, haproxy: FakeHAProxy,
            tree: str | None = None) -> dict:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ)
    if tree:                               # dcnet from that source tree (a worktree)
        env["PYTHONPATH"] = os.path.abspath(tree)
    child = subprocess.Popen([sys.executable, __file__, "--serve", "--mode", mode,
                              "--load", load, "--model", model_path,
                              "--socket", haproxy.path, "--port", str(port),
                              "--services", str(args.services),
                              "--servers", str(args.servers)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env=env)
    try:
        word, loader_peak = child.stdout.readline().split()
        assert word == "ready"
        loaded = rss(child.pid)[0]         # the model loaded, nothing scraped yet
        durations, cpus = [], []
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=300) as r:
            body = r.read()                # warm-up: the fake HAProxy builds its answer
        for _ in range(args.scrapes):
            before = cpu_seconds(child.pid)
            started = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120) as r:
                body = r.read()
            durations.append(time.perf_counter() - started)
            cpus.append(cpu_seconds(child.pid) - before)
        now, peak = rss(child.pid)
        child.stdin.write("check\n")       # a drift check (the model, no target)
        child.stdin.flush()
        check_cpu = float(child.stdout.readline())
        after_check = rss(child.pid)[0]
    finally:
        child.stdin.close()
        child.wait(30)
    series = sum(1 for line in body.decode().splitlines() if line and line[0] != "#")
    digest = hashlib.sha256(body).hexdigest()[:16]   # the same body: the same digest
    cpu = statistics.median(cpus)
    return {"mode": mode, "load": load, "scrape_ms": statistics.median(durations) * 1000,
            "cpu_s": cpu, "core_at_15s": cpu / 15, "loaded_mib": loaded, "rss_mib": now,
            "peak_mib": peak, "loader_peak_mib": float(loader_peak),
            "check_cpu_s": check_cpu, "after_check_mib": after_check,
            "body_mib": len(body) / 2**20, "series": series, "digest": digest}


COLUMNS_OUT = [("scrape_ms", "scrape ms", "{:.0f}"), ("cpu_s", "CPU s", "{:.2f}"),
               ("core_at_15s", "core@15s", "{:.1%}"), ("loaded_mib", "loaded MiB", "{:.0f}"),
               ("rss_mib", "RSS MiB", "{:.0f}"), ("peak_mib", "peak MiB", "{:.0f}"),
               ("loader_peak_mib", "loader MiB", "{:.0f}"),
               ("check_cpu_s", "check CPU", "{:.2f}"), ("after_check_mib", "RSS chk", "{:.0f}"),
               ("body_mib", "body MiB", "{:.1f}"),
               ("series", "series", "{:.0f}")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--servers", type=int, default=10)
    parser.add_argument("--scrapes", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3, help="exporter processes per "
                        "mode and load (medians over them)")
    parser.add_argument("--modes", default="auto,server")
    parser.add_argument("--loads", default="inprocess,child")
    parser.add_argument("--trees", default="", help="NAME=DIR,...: run the exporter with "
                        "dcnet from each source tree (e.g. a git worktree of an earlier "
                        "commit), side by side; the first is the base of the ratios")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--load", default="child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--socket", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    trees = dict(t.split("=", 1) for t in args.trees.split(",") if t)
    # rows: (mode, name) with name a load, or tree:load when trees are given
    variants = [(f"{name}:{load}" if trees else load, trees.get(name), load)
                for name in (trees or [""]) for load in args.loads.split(",")]
    loads = [v[0] for v in variants]
    print(f"{args.services} services x {args.servers} real servers (+{SPARE} free slots "
          f"each), {args.scrapes} scrapes per process, {args.runs} processes per row, "
          f"medians; host {os.uname().nodename}, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f} at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
          + "".join(f"; {n} = {d}" for n, d in trees.items()), flush=True)
    with tempfile.TemporaryDirectory(prefix="dcnet-bench-") as work:
        model_path = os.path.join(work, "model.yaml")
        with open(model_path, "w") as handle:
            handle.write(model_text(args.services, args.servers))
        haproxy = FakeHAProxy(os.path.join(work, "admin.sock"), args.services, args.servers)
        try:
            results: dict[tuple[str, str], list[dict]] = {}
            for _ in range(args.runs):           # interleaved: drifting load hits all
                for mode in args.modes.split(","):
                    for name, tree, load in variants:
                        results.setdefault((mode, name), []).append(
                            measure(args, mode, load, model_path, haproxy, tree))
        finally:
            haproxy.close()
    print(f"load {os.getloadavg()[0]:.1f} at the end")
    print(f"{'mode':<7} {'load':<10}" + "".join(f" {title:>10}" for _, title, _ in COLUMNS_OUT))
    for (mode, load), runs in results.items():
        row = {key: statistics.median(r[key] for r in runs) for key, _, _ in COLUMNS_OUT}
        print(f"{mode:<7} {load:<10}" + "".join(f" {fmt.format(row[key]):>10}"
                                               for key, _, fmt in COLUMNS_OUT))
        base = results.get((mode, loads[0]))
        if load != loads[0] and base:
            ratios = {key: row[key] / statistics.median(r[key] for r in base)
                      for key, _, _ in COLUMNS_OUT
                      if statistics.median(r[key] for r in base)}
            print(f"{'':<7} {'x ' + loads[0]:<10}" + "".join(
                f" {ratios[key]:>9.2f}x" if key in ratios else f" {'':>10}"
                for key, _, _ in COLUMNS_OUT))
    for mode in args.modes.split(","):      # bodies compared byte for byte (sha256)
        digests = {load: sorted({r["digest"] for r in runs})
                   for (m, load), runs in results.items() if m == mode}
        same = len({d for ds in digests.values() for d in ds}) == 1
        print(f"{mode} body sha256: " + ", ".join(f"{load} {' '.join(ds)}"
                                                  for load, ds in digests.items())
              + (" (all the same)" if same else " (DIFFERENT)"))


if __name__ == "__main__":
    main()
