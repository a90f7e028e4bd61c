"""Benchmark (root): dcnet's etcd client (``dcnet.sysio.etcd``, HTTP/JSON gateway, no
dependency) against ``aetcd`` (gRPC, asyncio), side by side on lab etcd clusters.

The parent (the project's venv) starts two 3-member clusters in lab namespaces, one plain
and one TLS (``dcnet.lab.etcd_lab``), and runs every measurement in a fresh child process
inside the clients' namespace (``ip netns exec``): ours with this interpreter, aetcd with
the interpreter of a throwaway venv (``--aetcd-python``; aetcd is never installed into
the project). Measured, for each client:

- import: time to import the client module and RSS growth, then the first request
  (connect included) and RSS growth after it; medians of ``--imports`` fresh processes;
- put / get: median and p90 of ``--ops`` sequential 100-byte puts and gets (plain; TLS);
- failover: endpoints A,B,C, member A (in use) SIGKILLed: time until a put succeeds and
  the errors seen meanwhile (aetcd: ``host=A``, and a gRPC target ``ipv4:A,B,C``);
- watch resume: a watch from a revision, A killed, five keys written through B/C, the
  child resuming from the last revision seen + 1: time from the break until all arrived;
- auth token refresh: auth on, a logged-in client left idle past etcd's token TTL (set
  to 3 s here; etcd forgets idle simple tokens): whether and when the next get succeeds;
- lines of code and installed dependencies.

    sudo .venv/bin/python bench/etcd_clients.py [--aetcd-python /tmp/aetcd-venv/bin/python]
        [--ops 500] [--imports 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

KEY_VALUE = "v" * 100
WINDOW = 15.0  # seconds a child keeps trying after a failure (failover, auth)
TOKEN_TTL = 3  # etcd's --auth-token-ttl in the bench clusters (seconds)


# ---------------------------------------------------------------- child side: adapters


class Ours:
    name = "ours"

    def __init__(self, args: argparse.Namespace):
        from dcnet.sysio.etcd import Client, Settings

        self.client = Client(Settings(endpoints=tuple(args.endpoints.split(",")),
                                      ca=args.ca, cert=args.cert, key=args.key,
                                      user=args.user, password=args.password, timeout=5.0))

    async def put(self, key: str, value: str) -> int:
        return self.client.put(key, value)

    async def get(self, key: str) -> bytes | None:
        kv = self.client.get(key)
        return kv.value if kv else None

    async def watch(self, prefix: str, start: int, seconds: float):
        """Yield (revision, key); raise on a break; return after ``seconds``."""
        import threading

        stop = threading.Event()
        timer = threading.Timer(seconds, stop.set)
        timer.start()
        try:
            for revision, events in self.client.watch_prefix(prefix, start, stop):
                for event in events:
                    yield revision, event.kv.key
        finally:
            timer.cancel()

    async def close(self) -> None:
        self.client.close()


class Aetcd:
    name = "aetcd"

    def __init__(self, args: argparse.Namespace):
        import aetcd

        hostports = [e.split("://", 1)[1] for e in args.endpoints.split(",")]
        if len(hostports) == 1:
            host, port = hostports[0].rsplit(":", 1)
        else:  # gRPC's multi-address target: aetcd builds f"{host}:{port}"
            host, port = ("ipv4:" + ",".join(hostports)).rsplit(":", 1)
        # no TLS parameters exist (aetcd opens rpc.insecure_channel): --ca etc. are ignored
        self.client = aetcd.Client(host=host, port=int(port), username=args.user,
                                   password=args.password, timeout=5)

    async def put(self, key: str, value: str) -> int:
        return (await self.client.put(key.encode(), value.encode())).header.revision

    async def get(self, key: str) -> bytes | None:
        got = await self.client.get(key.encode())
        return got.value if got else None

    async def watch(self, prefix: str, start: int, seconds: float):
        import asyncio

        watch = await self.client.watch_prefix(prefix.encode(), start_revision=start)
        try:
            async with asyncio.timeout(seconds):
                async for event in watch:
                    yield event.kv.mod_revision, event.kv.key.decode()
        except TimeoutError:
            return
        finally:
            await watch.cancel()

    async def close(self) -> None:
        await self.client.close()


def rss_kb() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:160]}"


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def wait_for_go() -> None:
    emit(ready=True)
    sys.stdin.readline()


# ---------------------------------------------------------------- child side: scenarios


def child_import(args: argparse.Namespace) -> None:
    base = rss_kb()
    start = time.perf_counter()
    if args.child == "ours":
        import dcnet.sysio.etcd  # noqa: F401
    else:
        import aetcd  # noqa: F401
    imported = time.perf_counter() - start
    after_import = rss_kb()
    import asyncio

    async def first() -> float:
        client = ADAPTERS[args.child](args)
        begin = time.perf_counter()
        await client.get("/bench/none")
        took = time.perf_counter() - begin
        await client.close()
        return took

    first_request = asyncio.run(first())
    emit(import_ms=imported * 1000, rss_import_kb=after_import - base,
         first_request_ms=first_request * 1000, rss_connected_kb=rss_kb() - base)


async def child_latency(client, args: argparse.Namespace) -> None:
    puts, gets = [], []
    for _ in range(args.ops):
        begin = time.perf_counter()
        await client.put("/bench/k", KEY_VALUE)
        puts.append(time.perf_counter() - begin)
    for _ in range(args.ops):
        begin = time.perf_counter()
        await client.get("/bench/k")
        gets.append(time.perf_counter() - begin)
    emit(put_ms=summary(puts), get_ms=summary(gets))


async def child_retry(client, args: argparse.Namespace) -> None:
    """After GO, repeat one request until it succeeds (failover, auth)."""
    import asyncio

    if args.scenario == "auth":
        await client.get("/bench/k")
    else:
        await client.put("/bench/k", KEY_VALUE)
    wait_for_go()
    begin, errors, first_error = time.perf_counter(), 0, None
    while time.perf_counter() - begin < WINDOW:
        try:
            if args.scenario == "auth":
                await client.get("/bench/k")
            else:
                await client.put("/bench/k", KEY_VALUE)
            emit(ok=True, seconds=time.perf_counter() - begin, errors=errors,
                 first_error=first_error)
            return
        except Exception as exc:
            errors += 1
            first_error = first_error or describe(exc)
            await asyncio.sleep(0.1)
    outcome = {"ok": False, "seconds": WINDOW, "errors": errors, "first_error": first_error}
    if args.scenario == "auth":  # what a caller can do: a new client logs in again
        try:
            fresh = ADAPTERS[args.child](args)
            await fresh.get("/bench/k")
            outcome["new_client_ok"] = True
        except Exception as exc:
            outcome["new_client_ok"] = describe(exc)
    emit(**outcome)


async def child_watch(client, args: argparse.Namespace) -> None:
    """Watch /w/ from /w/0's revision; resume from the last revision + 1 on a break."""
    import asyncio

    start = await client.put("/w/0", "0")
    seen: list[tuple[int, str]] = []
    breaks: list[str] = []
    broke_at = None
    deadline = time.perf_counter() + 30
    next_revision = start
    while time.perf_counter() < deadline and len({k for _, k in seen}) < 6:
        try:
            async for revision, key in client.watch(
                    "/w/", next_revision, max(0.1, deadline - time.perf_counter())):
                seen.append((revision, key))
                next_revision = revision + 1
                if key == "/w/0" and not breaks:
                    emit(ready=True)
                if len({k for _, k in seen}) >= 6:
                    break
        except Exception as exc:
            breaks.append(describe(exc))
            broke_at = broke_at or time.perf_counter()
            await asyncio.sleep(0.1)
    keys = [k for _, k in seen]
    done = time.perf_counter()
    emit(keys=keys, missed=sorted({f"/w/{i}" for i in range(6)} - set(keys)),
         duplicates=len(keys) - len(set(keys)), breaks=len(breaks),
         first_break=breaks[0] if breaks else None,
         resume_s=(done - broke_at) if broke_at else None)


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"median": statistics.median(ordered) * 1000,
            "p90": ordered[int(0.9 * (len(ordered) - 1))] * 1000}


ADAPTERS = {"ours": Ours, "aetcd": Aetcd}


def child_main(args: argparse.Namespace) -> None:
    if args.scenario == "import":
        child_import(args)
        return
    import asyncio

    async def run() -> None:
        try:
            client = ADAPTERS[args.child](args)
            if args.scenario == "latency":
                await child_latency(client, args)
            elif args.scenario in ("failover", "auth"):
                await child_retry(client, args)
            else:
                await child_watch(client, args)
            await client.close()
        except Exception as exc:
            emit(error=describe(exc))

    asyncio.run(run())


# ---------------------------------------------------------------- parent side


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOSTS = ["etcd1", "etcd2", "etcd3"]


class Runner:
    """Starts children in a cluster's client namespace and drives their READY/GO steps."""

    def __init__(self, args: argparse.Namespace):
        self.args = args

    def child(self, impl: str, scenario: str, cluster, endpoints=None, user=None,
              password=None, on_ready=None) -> dict:
        python = sys.executable if impl == "ours" else self.args.aetcd_python
        argv = ["ip", "netns", "exec", cluster.lab.netns(cluster.client_host), python,
                os.path.abspath(__file__), "--child", impl, "--scenario", scenario,
                "--endpoints", ",".join(endpoints or cluster.endpoints),
                "--ops", str(self.args.ops)]
        if cluster.tls:
            argv += ["--ca", cluster.ca, "--cert", cluster.root_cert, "--key", cluster.root_key]
        if user:
            argv += ["--user", user, "--password", password]
        child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, cwd=REPO)
        result = None
        for line in child.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("ready"):
                if on_ready is not None:
                    on_ready()
                with contextlib.suppress(BrokenPipeError):
                    child.stdin.write("GO\n")
                    child.stdin.flush()
            else:
                result = message
        child.stdin.close()
        errors = child.stderr.read()
        child.wait()
        if result is None:
            result = {"error": f"child exited {child.returncode}: {errors.strip()[-300:]}"}
        return result


def median_of(runs: list[dict], field: str) -> float | None:
    return statistics.median([r[field] for r in runs if field in r] or [float("nan")])


def lines_of(paths: list[str]) -> int:
    return sum(len(open(path, errors="replace").readlines()) for path in paths)


def code_size(aetcd_python: str) -> dict:
    ours_dir = os.path.join(REPO, "dcnet", "sysio", "etcd")
    ours = [os.path.join(ours_dir, n) for n in sorted(os.listdir(ours_dir)) if n.endswith(".py")]
    site = subprocess.run([aetcd_python, "-c", "import aetcd, os; "
                           "print(os.path.dirname(os.path.dirname(aetcd.__file__)))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    files = [os.path.join(root, name) for root, _, names in os.walk(f"{site}/aetcd")
             for name in names if name.endswith(".py")]
    written = [path for path in files if "_pb2" not in path]
    generated = [path for path in files if "_pb2" in path]

    def size_mb(name: str) -> float:
        total = 0
        for root, _, names in os.walk(os.path.join(site, name)):
            total += sum(os.path.getsize(os.path.join(root, n)) for n in names)
        return total / 1e6

    return {"ours_lines": lines_of(ours), "aetcd_lines": lines_of(written),
            "aetcd_generated_lines": lines_of(generated),
            "aetcd_deps_mb": {name: round(size_mb(name), 1)
                              for name in ("aetcd", "grpc", "google")}}


def measure(args: argparse.Namespace, plain, tls) -> dict:
    run = Runner(args).child
    impls = ("ours", "aetcd")
    out: dict = {"code": code_size(args.aetcd_python)}
    runs: dict[str, list[dict]] = {impl: [] for impl in impls}
    for _ in range(args.imports):
        for impl in impls:
            runs[impl].append(run(impl, "import", plain))
    fields = ("import_ms", "rss_import_kb", "first_request_ms", "rss_connected_kb")
    out["import"] = {impl: {f: median_of(runs[impl], f) for f in fields}
                     | {"errors": [r["error"] for r in runs[impl] if "error" in r][:1]}
                     for impl in impls}
    out["latency_plain"] = {impl: run(impl, "latency", plain) for impl in impls}
    out["latency_tls"] = {impl: run(impl, "latency", tls) for impl in impls}

    def ordered(role: str) -> list[str]:
        """Endpoints with a follower (or the leader) first: the member to be killed."""
        for member in plain.members:
            status = plain.client(prefix="", endpoints=[plain.member_endpoint(member)]).status()
            if (status["leader"] == status["member_id"]) == (role == "leader"):
                first = plain.member_endpoint(member)
                return [first, *(e for e in plain.endpoints if e != first)]
        raise RuntimeError(f"no {role} found")

    def kill_first(endpoints: list[str]):
        member = plain.members[plain.endpoints.index(endpoints[0])]
        return lambda: plain.kill(member)

    def restart_all() -> None:
        plain.start_all()
        plain.wait_healthy()

    out["failover"] = {}
    for role, label, impl, single in (
            ("follower", "ours A,B,C", "ours", False),
            ("follower", "aetcd host=A", "aetcd", True),
            ("follower", "aetcd ipv4:A,B,C", "aetcd", False),
            ("leader", "ours A,B,C", "ours", False),
            ("leader", "aetcd ipv4:A,B,C", "aetcd", False)):
        endpoints = ordered(role)
        out["failover"][f"{role} killed, {label}"] = run(
            impl, "failover", plain, endpoints[:1] if single else endpoints,
            on_ready=kill_first(endpoints))
        restart_all()

    out["watch"] = {}
    for label, impl in (("ours A,B,C", "ours"), ("aetcd ipv4:A,B,C", "aetcd")):
        endpoints = ordered("follower")
        writer = plain.client(prefix="", endpoints=endpoints[1:])
        kill = kill_first(endpoints)

        def kill_and_write(kill=kill, writer=writer) -> None:
            kill()
            for index in range(1, 6):
                writer.put(f"/w/{index}", str(index))

        writer.delete_prefix("/w/")
        out["watch"][label] = run(impl, "watch", plain, endpoints, on_ready=kill_and_write)
        restart_all()

    # etcd forgets a simple token unused for --auth-token-ttl seconds (3 here: see
    # parent_main; 300 by default): an idle client must log in again
    plain.enable_auth("bench-root")
    out["auth"] = {impl: run(impl, "auth", plain, user="root", password="bench-root",
                             on_ready=lambda: time.sleep(2 * TOKEN_TTL)) for impl in impls}
    return out


def fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(ours, aetcd) -> str:
    return "-" if not ours or not aetcd else f"{aetcd / ours:.2f}x"


def report(out: dict) -> None:
    ours, aetcd = out["import"]["ours"], out["import"]["aetcd"]
    print("import (medians of fresh processes)       ours      aetcd    aetcd/ours")
    for field in ("import_ms", "rss_import_kb", "first_request_ms", "rss_connected_kb"):
        print(f"  {field:<25} {fmt(ours[field], 1):>14} {fmt(aetcd[field], 1):>10}"
              f" {ratio(ours[field], aetcd[field]):>10}")
    for name in ("latency_plain", "latency_tls"):
        row = out[name]
        for op in ("put_ms", "get_ms"):
            o, a = row["ours"].get(op, {}), row["aetcd"].get(op, {})
            print(f"{name} {op}: median ours {fmt(o.get('median'), 3)} aetcd "
                  f"{fmt(a.get('median'), 3)} ({ratio(o.get('median'), a.get('median'))}); "
                  f"p90 ours {fmt(o.get('p90'), 3)} aetcd {fmt(a.get('p90'), 3)}")
        for impl in ("ours", "aetcd"):
            if "error" in row[impl]:
                print(f"  {impl}: {row[impl]['error']}")
    for name in ("failover", "watch", "auth"):
        for label, result in out[name].items():
            print(f"{name}, {label}: {json.dumps(result)}")
    print("code:", json.dumps(out["code"]))


def parent_main(args: argparse.Namespace) -> None:
    import tempfile

    from dcnet.lab.builder import Lab
    from dcnet.lab.etcd_lab import etcd_hosts_topology, start_etcd_cluster

    if not os.path.exists(args.aetcd_python):
        sys.exit(f"{args.aetcd_python} not found: python3 -m venv /tmp/aetcd-venv && "
                 f"/tmp/aetcd-venv/bin/pip install aetcd")
    os.environ["ETCD_AUTH_TOKEN_TTL"] = str(TOKEN_TTL)  # etcd reads flags from ETCD_*
    with (tempfile.TemporaryDirectory() as work,
          Lab(etcd_hosts_topology(subnet="10.96.0.0/24")) as plain_lab,
          Lab(etcd_hosts_topology(subnet="10.95.0.0/24")) as tls_lab):
        plain = start_etcd_cluster(plain_lab, HOSTS, f"{work}/plain", tls=False,
                                   client_host="etcdsw")
        tls = start_etcd_cluster(tls_lab, HOSTS, f"{work}/tls", client_host="etcdsw")
        try:
            plain.wait_healthy()
            tls.wait_healthy()
            out = measure(args, plain, tls)
        finally:
            plain.close()
            tls.close()
    report(out)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(out, handle, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--aetcd-python", default="/tmp/aetcd-venv/bin/python")
    parser.add_argument("--ops", type=int, default=500)
    parser.add_argument("--imports", type=int, default=7)
    parser.add_argument("--json")
    for name in ("child", "scenario", "endpoints", "ca", "cert", "key", "user",
                 "password"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
    else:
        parent_main(args)


if __name__ == "__main__":
    main()
