"""Benchmark: the one-click load test (issue #19) against the lab's HTTP service.

A lab with a target namespace (``dcnet.lab.mirror_service``) on a bridge; a synthetic
recording of ``--sessions`` keep-alive sessions of ``--requests`` requests; then
``elbctl mirror loadtest`` with a pool on that bridge, ramping ``--steps`` until the SLO
(``--slo-p99-ms``, ``--slo-errors``) breaks. Prints the verdict; the report
(loadtest.json, loadtest.md, loadtest.png) goes to ``--out``.

    sudo .venv/bin/python bench/mirror_loadtest.py --out /tmp/mirror-loadtest \\
        [--slo-p99-ms 100] [--slo-errors 0.01] [--steps 1,2,5,10,20,50,100]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from click.testing import CliRunner

from dcnet.cli.elbctl import cli
from dcnet.lab.builder import Lab
from dcnet.lab.mirror_service import request_bytes
from dcnet.mirror import recording

PY = sys.executable
TARGET, PORT = "10.96.0.1", 8080


def topology(log_dir: str) -> dict:
    return {
        "hosts": ["sw", "target"],
        "bridges": [{"name": "br0", "host": "sw"}],
        "links": [{"a": {"host": "target", "ifname": "eth0", "addresses": [f"{TARGET}/16"]},
                   "b": {"host": "sw", "ifname": "p-t", "bridge": "br0"}}],
        "processes": [{"name": "target", "host": "target", "ready_tcp_port": PORT, "argv": [
            PY, "-m", "dcnet.lab.mirror_service", "--port", str(PORT), "--log",
            f"{log_dir}/target.log"]}],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--slo-p99-ms", default="100")
    parser.add_argument("--slo-errors", default="0.01")
    parser.add_argument("--steps", default="1,2,5,10,20,50,100")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="dcnet-mirror-loadtest-")
    rec = os.path.join(work, "rec.jsonl")
    recording.write(rec, [recording.Session(
        f"s{i}", f"10.1.0.1:{20000 + i}", f"{TARGET}:{PORT}", 0.0, chunks=(recording.Chunk(
            0, 0.0, b"".join(request_bytes(TARGET, f"/s{i}/r{r}")
                             for r in range(args.requests))),))
        for i in range(args.sessions)])
    with Lab(topology(work)) as lab:
        done = CliRunner().invoke(cli, [
            "mirror", "loadtest", rec, "--target", f"{TARGET}:{PORT}",
            "--slo-p99-ms", args.slo_p99_ms, "--slo-errors", args.slo_errors,
            "--steps", args.steps, "--out-dir", args.out, "--pool", "10.96.0.0/16",
            "--via", "br0", "--via-netns", lab.netns("sw")])
    print(done.stderr, end="")
    print(done.stdout, end="")
    if done.exception and not isinstance(done.exception, SystemExit):
        raise done.exception
    return done.exit_code


if __name__ == "__main__":
    sys.exit(main())
