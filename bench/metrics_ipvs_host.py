"""Benchmark on a host without IPVS: the ELB collector's IPVS scrape at 10,000 services x
10 real servers over inputs in the kernel's formats, for one or several source trees
side by side (e.g. a commit checked out with ``git worktree add``).

    .venv/bin/python bench/metrics_ipvs_host.py [--services 10000] [--servers 10]
        [--scrapes 7] [--runs 3] [--trees before=/tmp/old,after=.] [--mode auto]

The parent writes the inputs once into a temporary directory: ``/proc/net/ip_vs`` as
``ip_vs_info_seq_show`` prints it (:func:`dcnet.lvs.procfs.format_table`; TCP NAT
services on bench/metrics_scrape.py's model addresses, every 97th real server weight 0,
active and inactive connections of 0 to 4 digits), ``ip_vs_stats``, and the generic-
netlink service dump as the kernel sends it on x86-64 (``ip_vs_genl_fill_service``: AF,
protocol, a 16-byte address, port, scheduler, flags, timeout, netmask, STATS and STATS64
nests without pad attributes; messages packed into 32 KiB datagrams), and the model's
labelling index (:class:`dcnet.metrics.elb.ServiceIndex`, pickled: the exporter keeps
only that, its model is loaded in a child; without HAProxy's service table where the
tree's index leaves it out for an exporter without the haproxy target).

Each (tree, run) is one fresh process importing that tree's ``dcnet`` (and
``dcnet.cli.elbctl`` and ``dcnet.metrics.server``, as ``elbctl exporter`` has), with its
``ipvs_source`` reading the files instead of ``/proc`` and a socket replaying the dump
datagrams (read from the file one ``recv`` at a time, so the process never holds the
dump whole), then an
:class:`~dcnet.metrics.elb.ELBCollector` with the index and the bound (``--mode``;
dest dumps, asked for per-server counters, are answered empty). One warm-up scrape,
then ``--scrapes`` scrapes each consumed piece by piece as the HTTP server writes them
(never joined), each in a new thread with the heap trimmed after, as
:mod:`dcnet.metrics.server` answers. Per process: median wall and CPU seconds of a scrape,
the CPU seconds without the bench's own reading of the body (``own CPU s``: its sha256
and line counts, about 28 ms at 10,000 x 10, timed by the answering thread's clock),
RSS after the scrapes, VmHWM (the process's peak) before and after the scrapes, and in a
last scrape under :mod:`tracemalloc` the peak of Python allocations during a scrape;
series (sample lines), body size, and whether every body was the same (sha256).
Medians over ``--runs`` processes per tree, runs interleaved.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import random
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATAGRAM = 32768
_HDR, _GENL = struct.Struct("=IHHII"), struct.Struct("=BBH")


def vip(n: int) -> str:
    return f"10.{128 + n // 65536}.{n // 256 % 256}.{n % 256}"     # metrics_scrape's model


def server(n: int, s: int) -> str:
    return f"10.{n // 256 % 256}.{n % 256}.{s + 1}"


def attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length & 3)


def nest(kind: int, *parts: bytes) -> bytes:
    return attr(kind | 0x8000, b"".join(parts))


def service_attrs(n: int, rng: random.Random) -> bytes:
    """One service of a GET_SERVICE dump as ip_vs_genl_fill_service lays it out."""
    from dcnet.lvs import genl, ipvs_stats

    u32, u64 = (lambda v: struct.pack("=I", v)), (lambda v: struct.pack("=Q", v))
    conns, inp, outp = rng.randrange(10**6), rng.randrange(10**8), rng.randrange(10**8)
    inb, outb = inp * 80, outp * 900
    s32 = b"".join([attr(1, u32(conns)), attr(2, u32(inp)), attr(3, u32(outp)),
                    attr(4, u64(inb)), attr(5, u64(outb)), *(attr(k, u32(0)) for k in
                                                             range(6, 11))])
    s64 = b"".join(attr(k, u64(v)) for k, v in enumerate((conns, inp, outp, inb, outb,
                                                           0, 0, 0, 0, 0), 1))
    return nest(genl.CMD_ATTR_SERVICE,
                attr(genl.SVC_AF, struct.pack("=H", socket.AF_INET)),
                attr(genl.SVC_PROTOCOL, struct.pack("=H", socket.IPPROTO_TCP)),
                attr(genl.SVC_ADDR, socket.inet_aton(vip(n)) + bytes(12)),
                attr(genl.SVC_PORT, struct.pack("!H", 80)),
                attr(genl.SVC_SCHED_NAME, b"wrr\0"),
                attr(genl.SVC_FLAGS, struct.pack("=II", 0, 0xFFFFFFFF)),
                attr(genl.SVC_TIMEOUT, u32(0)), attr(genl.SVC_NETMASK, u32(0xFFFFFFFF)),
                nest(ipvs_stats.SVC_STATS, s32), nest(ipvs_stats.SVC_STATS64, s64))


def write_inputs(work: str, services: int, servers: int) -> None:
    """ip_vs (text), ip_vs_stats, dump (length-prefixed datagrams, seq 0), index.pickle."""
    from metrics_scrape import model_text

    from dcnet.lvs import genl, procfs
    from dcnet.metrics.elb import ServiceIndex
    from dcnet.model import load_model

    rng = random.Random(18)
    table = []
    for n in range(services):
        ws = genl.WireService(socket.AF_INET, socket.IPPROTO_TCP, vip(n), 80, sched="wrr")
        table.append((ws, [genl.WireDest(socket.AF_INET, server(n, s), 80, fwd=0,
                                         weight=0 if (n * servers + s) % 97 == 0 else 1,
                                         active=rng.randrange(10 ** rng.randrange(5)),
                                         inactive=rng.randrange(10 ** rng.randrange(5)))
                           for s in range(servers)]))
    with open(os.path.join(work, "ip_vs"), "w") as handle:
        handle.write(procfs.format_table(table))
    with open(os.path.join(work, "ip_vs_stats"), "w") as handle:
        handle.write("   Total Incoming Outgoing         Incoming         Outgoing\n"
                     "   Conns  Packets  Packets            Bytes            Bytes\n"
                     "  2FAF080 3B9ACA00 3B9ACA01       E8D4A51000       E8D4A51001\n\n"
                     " Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n"
                     "       0        0        0                0                0\n")
    messages = []
    for n in range(services):
        body = _GENL.pack(genl.CMD_NEW_SERVICE, 1, 0) + service_attrs(n, rng)
        messages.append(_HDR.pack(_HDR.size + len(body), 0x20, 2, 0, 0) + body)
    messages.append(_HDR.pack(_HDR.size + 4, 3, 2, 0, 0) + b"\0" * 4)     # NLMSG_DONE
    with open(os.path.join(work, "dump"), "wb") as handle:
        datagram = b""
        for message in messages:
            if datagram and len(datagram) + len(message) > DATAGRAM:
                handle.write(struct.pack("=I", len(datagram)) + datagram)
                datagram = b""
            datagram += message
        handle.write(struct.pack("=I", len(datagram)) + datagram)
    with open(os.path.join(work, "model.yaml"), "w") as handle:
        handle.write(model_text(services, servers))
    model = load_model(os.path.join(work, "model.yaml"))
    for name, index in (("index", ServiceIndex.of(model)),
                        ("index-ipvs", ServiceIndex.of(model, services=False))):
        with open(os.path.join(work, name + ".pickle"), "wb") as handle:
            pickle.dump(index, handle, protocol=pickle.HIGHEST_PROTOCOL)


class Replay:
    """A netlink socket's ``send``/``recv_into`` replaying the dump file: the request's
    sequence number is written into each message header as it is received."""

    def __init__(self, path: str):
        self.path, self.handle, self.seq = path, None, 0

    def send(self, request: bytes) -> int:
        self.seq = _HDR.unpack_from(request)[3]
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        if _GENL.unpack_from(request, _HDR.size)[0] == 4:    # IPVS_CMD_GET_SERVICE
            self.handle = open(self.path, "rb")  # noqa: SIM115 (closed at the next send)
        return len(request)

    def recv_into(self, buffer) -> int:
        if self.handle is None:                 # a dest dump: no dest (NLMSG_DONE)
            struct.pack_into("=IHHII", buffer, 0, _HDR.size + 4, 3, 2, self.seq, 0)
            struct.pack_into("=i", buffer, _HDR.size, 0)
            return _HDR.size + 4
        size = struct.unpack("=I", self.handle.read(4))[0]
        view = memoryview(buffer)[:size]
        self.handle.readinto(view)
        offset = 0
        while offset < size:
            length = _HDR.unpack_from(view, offset)[0]
            struct.pack_into("=I", view, offset + 8, self.seq)
            offset += (length + 3) & ~3
        return size

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def status() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def child(args) -> None:
    """One process of one tree: prints one line of figures (key=value)."""
    import inspect
    import tracemalloc

    import dcnet.cli.elbctl  # noqa: F401  (what `elbctl exporter` has imported)
    from dcnet.cli import elbctl_metrics
    from dcnet.lvs import ipvs_stats, procfs
    from dcnet.metrics import isolated, server  # noqa: F401  (its HTTP server's imports)
    from dcnet.metrics.cardinality import Bound
    from dcnet.metrics.elb import ELBCollector, ServiceIndex

    isolated.one_heap()
    work = args.work
    procfs.PROC_PATH = os.path.join(work, "ip_vs")
    elbctl_metrics.STATS_PATH = os.path.join(work, "ip_vs_stats")

    class ReplaySocket(ipvs_stats.StatsSocket):
        def __init__(self, sock=None):
            self.sock, self.seq, self.writes = Replay(os.path.join(work, "dump")), 0, 0
            self._buffer = bytearray(1 << 20)
            self._view = memoryview(self._buffer)
            self.family_id = 0x20

    ipvs_stats.StatsSocket = ReplaySocket
    # the index as this tree's exporter keeps it for the lvs target (no HAProxy labels)
    ipvs_only = "services" in inspect.signature(ServiceIndex.of).parameters
    with open(os.path.join(work, "index-ipvs.pickle" if ipvs_only else "index.pickle"),
              "rb") as handle:
        index = pickle.load(handle)
    collector = ELBCollector(model=lambda: index, bound=Bound(mode=args.mode),
                             ipvs_tables=elbctl_metrics.ipvs_source(["host"]))

    def answer(into: list) -> None:
        size = lines = 0
        reading = 0.0           # this thread's CPU spent in the bench's own reading
        digest = hashlib.sha256()
        for piece in collector.chunks():
            started = time.thread_time()
            size += len(piece)
            lines += piece.count(b"\n") - piece.count(b"\n#") - piece.startswith(b"#")
            digest.update(piece)
            reading += time.thread_time() - started
        into += [size, lines, int(digest.hexdigest()[:12], 16), reading]

    def scrape() -> tuple[int, int, int, float]:
        """One scrape as the server answers it: in a new thread, the heap trimmed after
        (dcnet.metrics.server)."""
        into: list = []
        thread = threading.Thread(target=answer, args=(into,), daemon=True)
        thread.start()
        thread.join()
        isolated.trim()
        return into[0], into[1], into[2], into[3]

    before = status()
    size, lines, digest, _ = scrape()            # warm-up
    walls, cpus, owns = [], [], []
    for _ in range(args.scrapes):
        wall, cpu = time.perf_counter(), time.process_time()
        reading = scrape()[3]
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        owns.append(cpus[-1] - reading)
    after = status()
    tracemalloc.start()
    scrape()
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"wall_ms={statistics.median(walls) * 1000:.1f} cpu_s={statistics.median(cpus):.3f}"
          f" own_cpu_s={statistics.median(owns):.3f}"
          f" rss_mib={after['VmRSS']:.1f} hwm_before_mib={before['VmHWM']:.1f}"
          f" hwm_mib={after['VmHWM']:.1f} traced_peak_mib={traced / 2**20:.1f}"
          f" series={lines} body_mib={size / 2**20:.2f} body_sha256={digest}", flush=True)


COLUMNS = [("wall_ms", "scrape ms", "{:.0f}"), ("cpu_s", "CPU s", "{:.3f}"),
           ("own_cpu_s", "own CPU s", "{:.3f}"),
           ("rss_mib", "RSS after", "{:.1f}"), ("hwm_before_mib", "HWM before", "{:.1f}"),
           ("hwm_mib", "HWM after", "{:.1f}"), ("traced_peak_mib", "traced peak", "{:.1f}"),
           ("series", "series", "{:.0f}"), ("body_mib", "body MiB", "{:.2f}")]


def run_child(tree: str, args, work: str) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree) + os.pathsep + HERE)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--work",
                          work, "--scrapes", str(args.scrapes), "--mode", args.mode],
                         cwd=os.path.abspath(tree), env=env, capture_output=True, text=True,
                         check=False)
    if out.returncode:
        raise SystemExit(f"{tree}: child failed\n{out.stderr}")
    return {k: float(v) for k, v in (f.split("=") for f in out.stdout.split())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--servers", type=int, default=10)
    parser.add_argument("--scrapes", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--trees", default=f"this={ROOT}",
                        help="NAME=PATH,... source trees to compare")
    parser.add_argument("--mode", default="auto", help="cardinality mode (auto, server, "
                        "service)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    sys.path.insert(0, ROOT)
    sys.path.insert(0, HERE)
    trees = dict(item.split("=", 1) for item in args.trees.split(","))
    with tempfile.TemporaryDirectory(prefix="mipvs-host-") as work:
        started = time.perf_counter()
        write_inputs(work, args.services, args.servers)
        print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {args.services} "
              f"services x {args.servers} real servers, mode {args.mode}, inputs "
              f"{os.path.getsize(os.path.join(work, 'ip_vs')) / 2**20:.1f} MiB of ip_vs text "
              f"+ {os.path.getsize(os.path.join(work, 'dump')) / 2**20:.1f} MiB of dump, "
              f"made in {time.perf_counter() - started:.0f}s; {os.cpu_count()} CPUs, load "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        results: dict[str, list[dict]] = {name: [] for name in trees}
        for run in range(args.runs):
            for name, tree in trees.items():
                result = run_child(tree, args, work)
                results[name].append(result)
                print(f"  run {run + 1} {name}: " + ", ".join(
                    f"{title} {fmt.format(result[key])}" for key, title, fmt in COLUMNS),
                    flush=True)
    digests = {f"{int(r['body_sha256']):012x}" for runs in results.values() for r in runs}
    print(f"bodies: {'all the same' if len(digests) == 1 else 'DIFFERENT'} (sha256 "
          f"{', '.join(sorted(digests))}...)")
    print(f"load {os.getloadavg()[0]:.2f} at the end; medians:")
    print(f"{'tree':<10}" + "".join(f" {title:>11}" for _, title, _ in COLUMNS))
    med = {name: {key: statistics.median(r[key] for r in runs) for key, _, _ in COLUMNS}
           for name, runs in results.items()}
    for name, values in med.items():
        print(f"{name:<10}" + "".join(f" {fmt.format(values[key]):>11}"
                                      for key, _, fmt in COLUMNS))
    names = list(med)
    for other in names[1:]:
        print(f"{other} / {names[0]}:" + "".join(
            f" {title} {med[other][key] / med[names[0]][key]:.2f}x"
            for key, title, _ in COLUMNS if med[names[0]][key]))


if __name__ == "__main__":
    main()
