"""Benchmark: the cost of one scrape of IPVS at 10,000 services x 10 real servers, dcnet's
exporter side by side with Debian's prometheus-node-exporter IPVS collector.

    .venv/bin/python bench/metrics_ipvs.py [--services 10000] [--servers 10]
        [--scrapes 5] [--runs 1] [--rows dcnet-auto,dcnet-server,ne,ne-service]

Where the host kernel lacks IPVS the script re-runs itself inside the kernel lab (one
virtme-ng boot, :func:`dcnet.lab.kernel_lab.run_in_guest`) and prints the guest's
report; under emulation absolute times mean little, so compare the rows of one boot.

In the guest: one network namespace holding ``--services`` TCP NAT services of
``--servers`` real servers each (programmed through dcnet's generic netlink; the
addresses of bench/metrics_scrape.py's model, which labels dcnet's series). Rows, each
one exporter process, ``--runs`` times interleaved, medians printed:

- ``dcnet-auto``: ``elbctl exporter``'s pieces in a child (``--serve``): its imports,
  the model loaded in a grandchild and only its labelling index kept
  (:class:`IsolatedWatch`, as ``elbctl exporter -f`` does), the ELB collector on the
  namespace (``ipvs_source``: ``/proc/net/ip_vs``, ``ip_vs_stats``, one service dump)
  served on loopback; default bound, so per service only (100,000 rows > 2,000);
- ``dcnet-server``: the same with ``--cardinality server`` (per real server too: one
  dest dump per service);
- ``ne``: ``prometheus-node-exporter --collector.disable-defaults --collector.ipvs``
  run in the namespace (per backend: its default labels);
- ``ne-service``: the same with ``--collector.ipvs.backend-labels=local_address,
  local_port,proto`` (node_exporter's own answer to node_exporter#1708: series summed
  per service).

Per row: the scrape's wall time (HTTP round trip, whole body read; after one warm-up),
the exporter's CPU seconds per scrape (utime+stime from /proc), its RSS after the
scrapes and its peak (VmHWM), the series (sample lines) in the body, those of IPVS alone
(``dcnet_ipvs_*``, ``dcnet_elb_vip_healthy_servers``, ``dcnet_service_info``;
``node_ipvs_*``), and the body size.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ROWS = ("dcnet-auto", "dcnet-server", "ne", "ne-service")
NE = "prometheus-node-exporter"


def vip(n: int) -> str:
    return f"10.{128 + n // 65536}.{n // 256 % 256}.{n % 256}"     # metrics_scrape's model


def server(n: int, s: int) -> str:
    return f"10.{n // 256 % 256}.{n % 256}.{s + 1}"


def program(name: str, services: int, servers: int) -> float:
    """The table, through dcnet's batched generic netlink; its seconds."""
    from dcnet.lvs import genl
    from dcnet.sysio import netns

    started = time.perf_counter()
    sock = genl.IPVSSocket(netns.socket_in(netns.path_of(name), socket.AF_NETLINK,
                                           socket.SOCK_RAW, genl.NETLINK_GENERIC))
    try:
        requests = []
        for n in range(services):
            service = genl.WireService(socket.AF_INET, socket.IPPROTO_TCP, vip(n), 80,
                                       sched="wrr")
            requests.append(genl.Request(genl.CMD_NEW_SERVICE, service))
            requests += [genl.Request(genl.CMD_NEW_DEST, service, genl.WireDest(
                socket.AF_INET, server(n, s), 80, fwd=0, weight=1)) for s in range(servers)]
        failed = [e for e in sock.execute(requests) if e]
        if failed:
            raise SystemExit(f"{len(failed)} IPVS writes failed (first errno {failed[0]})")
    finally:
        sock.close()
    return time.perf_counter() - started


def serve(args) -> None:
    """The child: ``elbctl exporter``'s imports and labelling, the ELB collector over
    the namespace's IPVS, served on loopback of the guest's root namespace."""
    import dcnet.cli.elbctl  # noqa: F401  (what `elbctl exporter` has imported)
    from dcnet.cli.elbctl_metrics import IsolatedWatch, ipvs_source
    from dcnet.metrics import isolated
    from dcnet.metrics.cardinality import Bound
    from dcnet.metrics.elb import ELBCollector
    from dcnet.metrics.exposition import Exposition
    from dcnet.metrics.server import serve as start

    isolated.one_heap()
    watch = IsolatedWatch({}, args.model, interval=0, vips=True)
    registry = Exposition()
    registry.register(ELBCollector(model=lambda: watch.current, bound=Bound(mode=args.mode),
                                   ipvs_tables=ipvs_source([args.netns])))
    server_ = start(registry, f"127.0.0.1:{args.port}")
    print("ready", flush=True)
    sys.stdin.read()                       # EOF: stop
    server_.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory(pid: int) -> tuple[float, float]:
    values = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values["VmRSS"], values["VmHWM"]


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=600) as answer:
        return answer.read()


def start_row(row: str, args, name: str, model_path: str):
    """(process, fetch function) of one exporter, ready to be scraped."""
    from dcnet.sysio import netns

    port = free_port()
    if row.startswith("dcnet"):
        mode = "server" if row == "dcnet-server" else "auto"
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve",
                                  "--mode", mode, "--model", model_path, "--netns", name,
                                  "--port", str(port)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if child.stdout.readline().strip() != "ready":
            raise SystemExit(f"{row}: the exporter did not start")
        url = f"http://127.0.0.1:{port}/metrics"
        return child, lambda: fetch(url)
    argv = ["ip", "netns", "exec", name, NE, "--collector.disable-defaults",
            "--collector.ipvs", f"--web.listen-address=127.0.0.1:{port}"]
    if row == "ne-service":
        argv.append("--collector.ipvs.backend-labels=local_address,local_port,proto")
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/metrics"
    path = netns.path_of(name)
    deadline = time.monotonic() + 300

    def probe() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    while not netns.call_here_in(path, probe):   # the wait is bounded, never measured
        if child.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{row}: {NE} did not start")
        time.sleep(0.5)
    return child, lambda: netns.call_here_in(path, fetch, url)


def ipvs_series(row: str, body: str) -> int:
    prefixes = (("node_ipvs_",) if row.startswith("ne")
                else ("dcnet_ipvs_", "dcnet_elb_vip_healthy_servers", "dcnet_service_info"))
    return sum(1 for line in body.splitlines() if line.startswith(prefixes))


def measure(row: str, args, name: str, model_path: str) -> dict:
    child, scrape = start_row(row, args, name, model_path)
    try:
        started = time.perf_counter()
        body = scrape()                     # warm-up (and the first scrape's cost)
        first = time.perf_counter() - started
        durations, cpus = [], []
        for _ in range(args.scrapes):
            before = cpu_seconds(child.pid)
            started = time.perf_counter()
            body = scrape()
            durations.append(time.perf_counter() - started)
            cpus.append(cpu_seconds(child.pid) - before)
        rss, peak = memory(child.pid)
    finally:
        if row.startswith("dcnet"):
            child.stdin.close()
        else:
            child.terminate()
        child.wait(60)
    text = body.decode()
    return {"scrape_ms": statistics.median(durations) * 1000, "first_ms": first * 1000,
            "cpu_s": statistics.median(cpus), "rss_mib": rss, "peak_mib": peak,
            "series": sum(1 for line in text.splitlines() if line and line[0] != "#"),
            "ipvs_series": ipvs_series(row, text), "body_mib": len(body) / 2**20}


COLUMNS = [("scrape_ms", "scrape ms", "{:.0f}"), ("first_ms", "first ms", "{:.0f}"),
           ("cpu_s", "CPU s", "{:.2f}"), ("rss_mib", "RSS MiB", "{:.1f}"),
           ("peak_mib", "peak MiB", "{:.1f}"), ("series", "series", "{:.0f}"),
           ("ipvs_series", "IPVS series", "{:.0f}"), ("body_mib", "body MiB", "{:.1f}")]


def in_guest(args) -> None:
    from metrics_scrape import model_text

    rows = args.rows.split(",")
    name = f"mipvsbench-{os.getpid()}"
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}: {args.services} "
          f"services x {args.servers} real servers, {args.scrapes} scrapes per process "
          f"after a warm-up, {args.runs} process(es) per row, medians; guest "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    try:
        seconds = program(name, args.services, args.servers)
        print(f"programmed {args.services * (args.servers + 1)} IPVS objects in "
              f"{seconds:.1f}s", flush=True)
        with tempfile.TemporaryDirectory(prefix="mipvs-bench-") as work:
            model_path = os.path.join(work, "model.yaml")
            with open(model_path, "w") as handle:
                handle.write(model_text(args.services, args.servers))
            results: dict[str, list[dict]] = {}
            for run in range(args.runs):
                for row in rows:
                    result = measure(row, args, name, model_path)
                    results.setdefault(row, []).append(result)
                    print(f"  run {run + 1} {row}: " + ", ".join(
                        f"{title} {fmt.format(result[key])}" for key, title, fmt in COLUMNS),
                        flush=True)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
    print(f"load {os.getloadavg()[0]:.2f} at the end")
    print(f"{'row':<13}" + "".join(f" {title:>11}" for _, title, _ in COLUMNS))
    med = {row: {key: statistics.median(r[key] for r in runs) for key, _, _ in COLUMNS}
           for row, runs in results.items()}
    for row, values in med.items():
        print(f"{row:<13}" + "".join(f" {fmt.format(values[key]):>11}"
                                      for key, _, fmt in COLUMNS))
    for mine, theirs in (("dcnet-auto", "ne"), ("dcnet-auto", "ne-service"),
                         ("dcnet-server", "ne")):
        if mine in med and theirs in med:
            print(f"{mine} / {theirs}:" + "".join(
                f" {title} {med[mine][key] / med[theirs][key]:.2f}x"
                for key, title, _ in COLUMNS if med[theirs][key]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--servers", type=int, default=10)
    parser.add_argument("--scrapes", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--netns", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    from dcnet.lab import kernel_lab

    if args.in_guest or kernel_lab.host_has_modules(["ip_vs"]):
        in_guest(args)
        return
    out = tempfile.mkdtemp(prefix="metrics-ipvs-bench-")
    argv = [sys.executable, os.path.abspath(__file__), "--in-guest", "--services",
            str(args.services), "--servers", str(args.servers), "--scrapes",
            str(args.scrapes), "--runs", str(args.runs), "--rows", args.rows]
    print(f"host load {os.getloadavg()[0]:.2f}; host kernel has no IPVS: running in the "
          f"kernel lab (log {out}/guest-console.log)", flush=True)
    run = kernel_lab.run_in_guest(argv, rwdirs=[out], memory="3G", timeout=5400,
                                  env={"PYTHONUNBUFFERED": "1", "HOME": "/root",
                                       "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                                  cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(run.log_tail(40))
    print(f"guest run: {run.seconds:.0f}s wall, exit {run.returncode}; host load "
          f"{os.getloadavg()[0]:.2f}")
    sys.exit(0 if run.ok else 1)


if __name__ == "__main__":
    main()
