"""Benchmark: 10,000 established TCP connections through an nft VIP across backend changes.

    .venv/bin/python bench/nft_established.py [--connections 10000] [--servers 4]

Namespaces (``ip netns``, removed at the end): a client ``c``, the director ``d`` (the nft
target's namespace, forwarding on) and real servers ``r1..rN`` on a bridge behind it,
whose default route is the director (NAT replies return through it). Each real server
runs an asyncio echo server (answers every line with its name and the line); the client
is an asyncio process that opens ``--connections`` TCP connections to the VIP and, on
each ``check``, sends one line on every connection and reads the answer.

Changes applied to the director between checks (``session.run``, what ``elbctl apply
--target nft`` runs), with every connection held open: add a backend, remove one, drain
one (weight 0), re-weight, switch the scheduler to ``mh`` (Maglev), a Maglev table swap
(one weight changed under ``mh``). After each: per connection ok / reset / other failure,
and whether it is still answered by the server it had at the start (conntrack keeps the
DNAT of established flows). Prints one line per step and a summary; nonzero exit if any
connection failed.

Also used by bench/nft_apply.py for its first-packet latency topology (:func:`Lab`).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import subprocess
import sys
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VIP = "10.251.0.1"
SERVER_PORT = 8080

ECHO = textwrap.dedent("""
    import asyncio, resource, sys
    _soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))
    name = sys.argv[1].encode()
    async def handle(reader, writer):
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                writer.write(name + b" " + line)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
    async def main():
        server = await asyncio.start_server(handle, "0.0.0.0", int(sys.argv[2]), backlog=4096)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()
    asyncio.run(main())
""")

CLIENT = textwrap.dedent("""
    import asyncio, json, resource, sys
    _soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))
    vip, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    conns = []
    async def opener(sem, out):
        async with sem:
            for attempt in range(5):
                try:
                    out.append(await asyncio.wait_for(asyncio.open_connection(vip, port), 30))
                    return
                except (OSError, asyncio.TimeoutError):
                    await asyncio.sleep(0.2 * (attempt + 1))
            out.append(None)
    async def ask(i, rw, sem):
        if rw is None:
            return "open-failed", None
        reader, writer = rw
        async with sem:
            try:
                writer.write(b"ping %d\\n" % i)
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), 30)
            except ConnectionResetError:
                return "reset", None
            except asyncio.TimeoutError:
                return "timeout", None
            except OSError as exc:
                return "error " + type(exc).__name__, None
        if not line:
            return "closed", None
        server, _, echoed = line.decode().strip().partition(" ")
        return ("ok" if echoed == "ping %d" % i else "garbled"), server
    async def main():
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            cmd = (await reader.readline()).decode().strip()
            if cmd == "open":
                sem = asyncio.Semaphore(256)
                out = []
                await asyncio.gather(*(opener(sem, out) for _ in range(count)))
                conns[:] = out
                print(json.dumps({"opened": sum(c is not None for c in conns)}), flush=True)
            elif cmd == "check":
                sem = asyncio.Semaphore(1024)
                res = await asyncio.gather(*(ask(i, c, sem) for i, c in enumerate(conns)))
                print(json.dumps(res), flush=True)
            else:
                return
    asyncio.run(main())
""")


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


class Lab:
    """Client ``c`` -- director ``d`` -- bridge -- real servers ``r1..rN`` (echo servers)."""

    def __init__(self, prefix: str, servers: int):
        self.prefix, self.n = prefix, servers
        self.c, self.d = f"{prefix}-c", f"{prefix}-d"
        self.rs = [f"{prefix}-r{i}" for i in range(1, servers + 1)]
        self.procs: list[subprocess.Popen] = []

    def addr(self, i: int) -> str:
        return f"10.250.1.{10 + i}"

    def __enter__(self) -> Lab:
        try:
            self._build()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _build(self) -> None:
        for ns in (self.c, self.d, *self.rs):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        x = lambda ns, *a: sh("ip", "-n", ns, *a)  # noqa: E731
        sh("ip", "link", "add", "c0", "netns", self.c, "type", "veth", "peer", "name", "d0",
           "netns", self.d)
        x(self.c, "addr", "add", "10.250.0.2/24", "dev", "c0")
        x(self.c, "link", "set", "c0", "up")
        x(self.c, "route", "add", "default", "via", "10.250.0.1")
        x(self.d, "addr", "add", "10.250.0.1/24", "dev", "d0")
        x(self.d, "link", "set", "d0", "up")
        x(self.d, "link", "add", "br0", "type", "bridge")
        x(self.d, "addr", "add", "10.250.1.1/24", "dev", "br0")
        x(self.d, "link", "set", "br0", "up")
        sh("ip", "netns", "exec", self.d, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for i, ns in enumerate(self.rs, 1):
            sh("ip", "link", "add", f"r{i}", "netns", self.d, "type", "veth", "peer", "name",
               "e0", "netns", ns)
            x(self.d, "link", "set", f"r{i}", "master", "br0", "up")
            x(ns, "addr", "add", f"{self.addr(i)}/24", "dev", "e0")
            x(ns, "link", "set", "e0", "up")
            x(ns, "route", "add", "default", "via", "10.250.1.1")
            proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", ECHO,
                                     f"r{i}", str(SERVER_PORT)], stdout=subprocess.PIPE,
                                    text=True)
            self.procs.append(proc)
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit(f"echo server r{i} did not start")

    def __exit__(self, *_exc) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait(timeout=10)
        for ns in (self.c, self.d, *self.rs):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def model(servers: dict[str, int], scheduler: str = "wrr", extra=()):
    """One NAT service VIP:80 -> servers:8080 (address -> weight), plus ``extra``."""
    from dcnet.model.jobname import JobName
    from dcnet.model.types import Carrier, Forwarding, Model, Port, Protocol, RealServer, Service

    carrier = Carrier("lab", "up0", ipaddress.ip_address("192.0.2.1"), 101,
                      (ipaddress.ip_network("10.0.0.0/8"),), default=True)
    port = Port(80, Protocol.TCP, scheduler, Forwarding.NAT, 0, SERVER_PORT)
    reals = tuple(RealServer(ipaddress.ip_address(a), w) for a, w in servers.items())
    job = JobName("est", "est", "c0", "p0", "o", "bench")
    service = Service(job, (("lab", ipaddress.ip_address(VIP)),), (port,), reals)
    return Model("bench", (carrier,), (service, *extra))


def apply(options: dict, m) -> tuple[float, int]:
    from dcnet.target import session

    started = time.perf_counter()
    outcome = session.run("nft", m, options, apply=True, force=True)
    if not outcome.ok:
        raise SystemExit(outcome.result.to_text()[-2000:])
    return time.perf_counter() - started, len(outcome.plan.changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--servers", type=int, default=4)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (creates network namespaces)")
    import tempfile

    n = args.servers
    with Lab(f"nfte{os.getpid() % 10000}", n + 1) as lab, \
            tempfile.TemporaryDirectory() as state_dir:
        options = {"netns": lab.d, "state_dir": state_dir}
        a = {lab.addr(i): 1 for i in range(1, n + 1)}
        took, _ = apply(options, model(a))
        print(f"{n} backends, scheduler wrr: applied in {took:.2f}s; load "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        client = subprocess.Popen(["ip", "netns", "exec", lab.c, sys.executable, "-c", CLIENT,
                                   VIP, "80", str(args.connections)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        started = time.perf_counter()
        client.stdin.write("open\n")
        client.stdin.flush()
        opened = json.loads(client.stdout.readline())["opened"]
        print(f"opened {opened} of {args.connections} connections in "
              f"{time.perf_counter() - started:.1f}s", flush=True)

        def check() -> list:
            client.stdin.write("check\n")
            client.stdin.flush()
            return json.loads(client.stdout.readline())

        first = check()
        owner = [srv for _status, srv in first]
        spread: dict[str, int] = {}
        for srv in owner:
            spread[srv] = spread.get(srv, 0) + 1
        print(f"before: {sum(s == 'ok' for s, _ in first)} ok; per server "
              f"{dict(sorted(spread.items()))}", flush=True)
        new = lab.addr(n + 1)
        weights = dict(a)
        steps = []
        weights[new] = 1
        steps.append(("add a backend", dict(weights), "wrr"))
        del weights[lab.addr(1)]
        steps.append(("remove a backend", dict(weights), "wrr"))
        weights[lab.addr(2)] = 0
        steps.append(("drain a backend", dict(weights), "wrr"))
        weights[lab.addr(3)] = 3
        steps.append(("re-weight", dict(weights), "wrr"))
        steps.append(("scheduler wrr -> mh (Maglev)", dict(weights), "mh"))
        weights[lab.addr(3)] = 1
        steps.append(("Maglev table swap (re-weight under mh)", dict(weights), "mh"))
        total_bad = 0
        rows = []
        for label, w, scheduler in steps:
            took, changes = apply(options, model(w, scheduler))
            res = check()
            counts: dict[str, int] = {}
            for status, _srv in res:
                counts[status] = counts.get(status, 0) + 1
            moved = sum(1 for (status, srv), before in zip(res, owner, strict=True)
                        if status == "ok" and srv != before)
            bad = len(res) - counts.get("ok", 0)
            total_bad += bad
            rows.append((label, changes, took, counts, moved))
            print(f"{label}: {changes} change(s) applied in {took:.2f}s; {counts}; "
                  f"answered by another server than at the start: {moved}; load "
                  f"{os.getloadavg()[0]:.1f}", flush=True)
        client.stdin.write("quit\n")
        client.stdin.flush()
        client.wait(timeout=120)
        print(f"summary: {opened} connections, {len(steps)} changes, resets/failures in "
              f"total: {total_bad}", flush=True)
        if total_bad:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
