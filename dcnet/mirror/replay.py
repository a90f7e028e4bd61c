"""Replay of recorded sessions to a target at a factor x0.1 .. x100.

It owns the copy plan (pure: which sessions each copy sends), the HTTP/1.1 request
splitter (pure), the worker that replays one copy's sessions from the namespace it runs
in, and the orchestrator that starts one worker per copy, each inside its own network
namespace (its own source addresses, so the ports of two copies can never collide).

Factor F: ``floor(F)`` copies send every session; one more copy sends the share
``F - floor(F)`` of sessions, chosen by a hash of the session id (so x0.1 sends 10% of
sessions, x2.5 three copies, the last with half the sessions). Within a session, bytes
go in recorded order on one connection. HTTP mode (default when the payload parses as
HTTP/1.1 requests with Content-Length or no body): each request is sent, then its
answer read, keep-alive; raw mode: the chunks are sent in order (with the recorded gaps
scaled by ``speed`` when ``timing``), the write side shut, the answer read to EOF.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from dcnet.mirror import recording
from dcnet.mirror.rules import split_address
from dcnet.sysio import proc

MIN_FACTOR, MAX_FACTOR = 0.1, 100.0


def _share(session_id: str) -> float:
    digest = hashlib.sha256(session_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def plan_copies(sessions: Sequence[recording.Session], factor: float
                ) -> list[list[recording.Session]]:
    """The sessions of each copy (copy i is list i)."""
    copies: list[list[recording.Session]] = [[] for _ in range(copy_count(factor))]
    for session in sessions:
        for index in copies_of(session.id, factor):
            copies[index].append(session)
    return copies


def copies_of(session_id: str, factor: float) -> list[int]:
    """The copies that send this session (pure; live replay decides per session)."""
    if not MIN_FACTOR <= factor <= MAX_FACTOR:
        raise ValueError(f"factor must be in {MIN_FACTOR}..{MAX_FACTOR}, not {factor}")
    whole = math.floor(factor + 1e-9)
    fraction = factor - whole
    chosen = list(range(whole))
    if fraction > 1e-9 and _share(session_id) < fraction:
        chosen.append(whole)
    return chosen


def copy_count(factor: float) -> int:
    """How many copies (so namespaces) factor needs."""
    return math.ceil(factor - 1e-9)


def split_http(payload: bytes) -> list[bytes] | None:
    """HTTP/1.1 requests in order, or None when the bytes are not (only) such requests."""
    requests = []
    rest = payload
    while rest:
        head, sep, after = rest.partition(b"\r\n\r\n")
        if not sep:
            return None
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return None
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"transfer-encoding":
                return None
            if name == b"content-length":
                if not value.strip().isdigit():
                    return None
                length = int(value)
        if len(after) < length:
            return None
        requests.append(head + sep + after[:length])
        rest = after[length:]
    return requests


def replay_session(session: recording.Session, target: tuple[str, int], timing: bool,
                   speed: float, timeout: float = 10.0) -> dict:
    """Send one session on one connection; the result has its answers."""
    result = {"id": session.id, "sent": 0, "answers": [], "error": None, "mode": "raw",
              "latencies": []}
    requests = split_http(session.payload)
    result["requests"] = len(requests) if requests is not None else 1
    begin = time.monotonic()
    try:
        with socket.create_connection(target, timeout=timeout) as sock:
            result["source"] = "{}:{}".format(*sock.getsockname())
            if requests is not None:
                result["mode"] = "http"
                rest = b""
                for request in requests:
                    sent_at = time.monotonic()
                    sock.sendall(request)
                    result["sent"] += len(request)
                    answer, rest = read_response(sock, rest)
                    result["latencies"].append(round(time.monotonic() - sent_at, 6))
                    result["answers"].append(base64.b64encode(answer).decode())
                return result
            for chunk in session.chunks:
                if timing:
                    delay = chunk.t / speed - (time.monotonic() - begin)
                    if delay > 0:
                        time.sleep(delay)
                sock.sendall(chunk.data)
                result["sent"] += len(chunk.data)
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while True:
                more = sock.recv(65536)
                if not more:
                    break
                data += more
            result["answers"].append(base64.b64encode(data).decode())
            result["latencies"].append(round(time.monotonic() - begin, 6))
    except OSError as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    return result


def replay_copy(sessions: Sequence[recording.Session], target: tuple[str, int],
                timing: bool = False, speed: float = 1.0, concurrency: int = 16) -> list[dict]:
    """Replay sessions concurrently (each session's own order kept); results in order."""
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(lambda s: replay_session(s, target, timing, speed), sessions))


def run_replay(recording_path: str, factor: float, target: str, namespaces: Sequence[str],
               out_dir: str, timing: bool = False, speed: float = 1.0,
               concurrency: int = 16, timeout: float = 600.0) -> dict:
    """One worker per copy, copy i inside ``namespaces[i]``; returns a summary."""
    copies = plan_copies(recording.read(recording_path), factor)
    if len(namespaces) < len(copies):
        raise ValueError(f"x{factor} needs {len(copies)} namespaces, "
                         f"{len(namespaces)} given")
    workers: list[tuple[int, str, subprocess.Popen]] = []
    summary: dict = {"factor": factor, "copies": []}
    try:
        for index in range(len(copies)):
            out = f"{out_dir}/copy-{index}.jsonl"
            argv = [sys.executable, "-m", "dcnet.mirror.replay", "--recording",
                    recording_path, "--copy", str(index), "--factor", str(factor),
                    "--target", target, "--out", out, "--speed", str(speed),
                    "--concurrency", str(concurrency)]
            if timing:
                argv.append("--timing")
            workers.append((index, out, proc.start(argv, netns=namespaces[index],
                                                   log_path=f"{out_dir}/copy-{index}.log")))
        deadline = time.monotonic() + timeout
        for index, out, popen in workers:
            try:
                code = popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                code = proc.stop(popen)     # counted as a failed copy, never left running
            results = []
            if code == 0:
                with open(out) as handle:
                    results = [json.loads(line) for line in handle]
            summary["copies"].append({
                "copy": index, "netns": namespaces[index], "exit": code,
                "sessions": len(copies[index]), "replayed": len(results),
                "errors": sum(1 for r in results if r["error"]), "out": out})
    finally:        # Ctrl-C, SIGTERM, any error: no worker outlives the call
        for _, _, popen in workers:
            proc.stop(popen)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dcnet.mirror.replay",
                                     description="Replay one copy (the worker).")
    parser.add_argument("--recording", required=True)
    parser.add_argument("--copy", type=int, required=True)
    parser.add_argument("--factor", type=float, required=True)
    parser.add_argument("--target", required=True, help="IP:PORT")
    parser.add_argument("--out", required=True)
    parser.add_argument("--timing", action="store_true")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    sessions = plan_copies(recording.read(args.recording), args.factor)[args.copy]
    results = replay_copy(sessions, split_address(args.target), args.timing, args.speed,
                          args.concurrency)
    with open(args.out, "w") as handle:
        for result in results:
            handle.write(json.dumps(result) + "\n")
    return 0


def read_response(sock: socket.socket, buffer: bytes) -> tuple[bytes, bytes]:
    """One HTTP response with Content-Length from sock; returns (response, rest)."""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed before a response")
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed inside a response body")
        rest += data
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


if __name__ == "__main__":
    sys.exit(main())
