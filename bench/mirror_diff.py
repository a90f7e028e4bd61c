"""Benchmark: false and real differences of ``elbctl mirror diff`` at scale (issue #19).

A lab of two namespaces on one veth: ``svc`` runs four instances of the deterministic
HTTP/1.1 service (``dcnet.lab.mirror_service``): primary (the current version, :8080),
secondary (a second current, :8081), an unchanged candidate (:8082) and a changed
candidate (:8083, ``--variant changed``: every path ending in ``/changed`` answers
another body). A synthetic recording of ``--sessions`` keep-alive sessions (seeded, 1 to
4 requests each over five endpoints: ``GET /item/N``, ``GET /list/N?page=N``,
``GET /user/N/profile``, ``POST /search`` with a body, ``GET /item/N/changed``) is
diffed from the ``client`` namespace by the real command, ``elbctl mirror diff``
(a subprocess), three times:

1. ``unchanged``: the unchanged candidate; every reported difference is false.
2. ``changed``: the changed candidate; differences per endpoint against the requests
   each endpoint got (only ``GET /item/N/changed`` should differ, all of its requests).
3. ``unchanged-date-compared`` (``--date``): the unchanged candidate with no header
   ignored, so ``Date`` is compared and only the noise rule (primary vs secondary) can
   keep it from being reported.

Prints one JSON document: per run the requests, differences, false-difference share,
failed/skipped sessions, wall time, per-endpoint counts and the first examples.

    sudo .venv/bin/python bench/mirror_diff.py [--sessions 10000] [--seed 19] [--date]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time

from dcnet.lab.builder import Lab
from dcnet.lab.mirror_service import request_bytes
from dcnet.mirror import recording

PY = sys.executable
SVC, CLIENT = "10.97.0.1", "10.97.0.2"
PRIMARY, SECONDARY, SAME, CHANGED = 8080, 8081, 8082, 8083
CHANGED_ENDPOINT = "GET /item/N/changed"


def topology(log_dir: str) -> dict:
    serve = [PY, "-m", "dcnet.lab.mirror_service", "--port"]
    processes = [
        {"name": name, "host": "svc", "ready_tcp_port": port,
         "argv": [*serve, str(port), "--log", f"{log_dir}/{name}.log", *variant]}
        for name, port, variant in (("primary", PRIMARY, ()), ("secondary", SECONDARY, ()),
                                    ("same", SAME, ()),
                                    ("changed", CHANGED, ("--variant", "changed")))]
    return {
        "hosts": ["svc", "client"],
        "links": [{"a": {"host": "svc", "ifname": "eth0", "addresses": [f"{SVC}/24"]},
                   "b": {"host": "client", "ifname": "eth0", "addresses": [f"{CLIENT}/24"]}}],
        "processes": processes,
    }


def one_request(rng: random.Random, user: int) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return request_bytes(SVC, f"/item/{rng.randrange(100000)}")
    if kind == 1:
        return request_bytes(SVC, f"/list/{rng.randrange(1000)}?page={rng.randrange(50)}")
    if kind == 2:
        return request_bytes(SVC, f"/user/{user}/profile")
    if kind == 3:
        body = json.dumps({"q": f"term{rng.randrange(10000)}", "user": user}).encode()
        return (f"POST /search HTTP/1.1\r\nHost: {SVC}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    return request_bytes(SVC, f"/item/{rng.randrange(100000)}/changed")


def synthetic(count: int, seed: int) -> list[recording.Session]:
    rng = random.Random(seed)
    sessions = []
    for i in range(count):
        payload = b"".join(one_request(rng, i) for _ in range(rng.randint(1, 4)))
        sessions.append(recording.Session(
            f"d{i}", f"10.1.{i // 60000}.1:{1024 + i % 60000}", f"{SVC}:{PRIMARY}", 0.0,
            chunks=(recording.Chunk(0, 0.0, payload),)))
    return sessions


def run(lab, rec: str, candidate: int, *extra: str) -> dict:
    begin = time.monotonic()
    done = lab.run("client", [
        PY, "-m", "dcnet.cli.elbctl", "mirror", "diff", "--recording", rec,
        "--candidate", f"{SVC}:{candidate}", "--primary", f"{SVC}:{PRIMARY}",
        "--secondary", f"{SVC}:{SECONDARY}", *extra], check=True, timeout=3600)
    wall = time.monotonic() - begin
    report = json.loads(done.stdout)
    report["wall_s"] = round(wall, 1)
    report["difference_share"] = round(report["differences"] / max(1, report["requests"]), 6)
    return report


def summarise(report: dict, examples: int) -> dict:
    endpoints = {ep: {"requests": r["requests"], "differences": r["differences"],
                      "fields": r["fields"], "noise_fields": r["noise_fields"],
                      "examples": r["examples"][:examples]}
                 for ep, r in report["endpoints"].items()}
    return {**{k: v for k, v in report.items() if k != "endpoints"}, "endpoints": endpoints}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--examples", type=int, default=2)
    parser.add_argument("--date", action="store_true",
                        help="also the run with Date compared (no header ignored)")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="dcnet-mirror-diff-")
    rec = f"{work}/rec.jsonl"
    sessions = synthetic(args.sessions, args.seed)
    recording.write(rec, sessions)
    result: dict = {"args": vars(args), "sessions": len(sessions)}
    with Lab(topology(work)) as lab:
        runs = [("unchanged", SAME), ("changed", CHANGED)]
        if args.date:
            runs.append(("unchanged-date-compared", SAME, "--ignore-header", "x-none"))
        for name, port, *extra in runs:
            report = run(lab, rec, port, *extra)
            result[name] = summarise(report, args.examples)
    changed = result["changed"]["endpoints"]
    hit = changed.get(CHANGED_ENDPOINT, {"requests": 0, "differences": 0})
    result["verdict"] = {
        "false_differences_unchanged": result["unchanged"]["differences"],
        "false_share_unchanged": result["unchanged"]["difference_share"],
        "changed_endpoint_found": f"{hit['differences']} / {hit['requests']}",
        "false_differences_changed_run": sum(
            r["differences"] for ep, r in changed.items() if ep != CHANGED_ENDPOINT)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
