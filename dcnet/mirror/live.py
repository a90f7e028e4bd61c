"""Live replay: the capture feeds the copies as it reassembles sessions, no recording file.

It owns :class:`LiveReplay`: the recorder's AF_PACKET sockets opened inside the mirror
namespace (:func:`dcnet.mirror.recorder.open_sockets`, through
:mod:`dcnet.sysio.netns`), a :class:`~dcnet.mirror.recorder.Recorder` whose ``on_data``
hook passes each session's new in-order bytes, as soon as reassembly has them, to the
copies that send that session (:func:`dcnet.mirror.replay.copies_of`: the same factor
rule as replay from a file, x0.1 .. x100), and one worker process per copy
(:mod:`dcnet.mirror.live_worker`) started inside that copy's own namespace, fed over its
stdin by a writer thread (the capture loop never waits on a worker). A copy whose queue
holds more than ``max_backlog`` bytes (it lags: its target or its namespace is slower
than production) is given no new session until it catches up; sessions it already has
go on whole, and the sessions shed are counted per copy. When the client
closes a session, its end goes to the same copies; optionally the sessions are also
written as a recording. Stop: SIGTERM/SIGINT (handled by the caller), ``stopped()`` or
``duration``; then the open sessions are ended, the workers get the end of their input,
and each is waited for (bounded) and stopped if still running.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

from dcnet.mirror import recorder as rec
from dcnet.mirror import recording, replay
from dcnet.mirror.reassembly import Stream
from dcnet.sysio import netns as netns_mod
from dcnet.sysio import proc

MAX_BACKLOG = 64 << 20      # bytes queued for one copy before it gets no new session


class Worker:
    """One copy's worker process and the thread writing its event lines."""

    def __init__(self, index: int, netns: str, target: str, out_dir: str, linger: float):
        self.index, self.netns = index, netns
        self.out = os.path.join(out_dir, f"copy-{index}.jsonl")
        argv = [sys.executable, "-m", "dcnet.mirror.live_worker", "--target", target,
                "--out", self.out, "--linger", str(linger)]
        with open(os.path.join(out_dir, f"copy-{index}.log"), "ab") as log:
            self.popen = subprocess.Popen(netns_mod.exec_argv(netns, argv),
                                          stdin=subprocess.PIPE, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        self.lines: queue.Queue = queue.Queue()
        self.sessions = 0
        self.shed = 0                   # sessions not given to this copy: it lagged
        self.backlog = 0                # bytes queued for the worker, not yet written
        self._lock = threading.Lock()
        self.writer = threading.Thread(target=self._write, daemon=True)
        self.writer.start()

    def send(self, event: dict) -> None:
        line = json.dumps(event, separators=(",", ":")) + "\n"
        with self._lock:
            self.backlog += len(line)
        self.lines.put(line)

    def close(self) -> None:
        self.lines.put(None)

    def _write(self) -> None:
        stdin = self.popen.stdin
        try:
            while (line := self.lines.get()) is not None:
                stdin.write(line.encode())
                with self._lock:
                    self.backlog -= len(line)
                if self.lines.empty():
                    stdin.flush()
        except (BrokenPipeError, OSError):
            pass                    # the worker died: its copy is reported failed
        finally:
            with contextlib.suppress(OSError):
                stdin.close()


class LiveReplay:
    """Capture on ``ifname`` in namespace ``capture_netns`` (None: here) and send every
    session to ``target`` at ``factor``, copy i from ``namespaces[i]``."""

    def __init__(self, ifname: str, capture_netns: str | None, target: str, factor: float,
                 namespaces: Sequence[str], out_dir: str, record_path: str | None = None,
                 anonymise_key: bytes | None = None, headers: Sequence[str] = (),
                 linger: float = 30.0, anonymise_clients: bool = True,
                 max_backlog: int = MAX_BACKLOG):
        self.copies = replay.copy_count(factor)
        replay.copies_of("", factor)            # validates the factor
        if len(namespaces) < self.copies:
            raise ValueError(f"x{factor} needs {self.copies} namespaces, "
                             f"{len(namespaces)} given")
        self.ifname, self.capture_netns, self.target = ifname, capture_netns, target
        self.factor, self.namespaces, self.out_dir = factor, list(namespaces), out_dir
        self.record_path, self.key = record_path, anonymise_key
        self.headers, self.linger = tuple(headers), linger
        self.clients_key = anonymise_key if anonymise_clients else None
        self.max_backlog = max_backlog
        self.workers: list[Worker] = []
        self.routes: dict[str, list[Worker]] = {}

    def _on_data(self, key: tuple, stream: Stream, first: int) -> None:
        sid = rec.session_id(key, stream.start or 0.0)
        workers = self.routes.get(sid)
        if workers is None:
            workers = self.routes[sid] = []
            for index in replay.copies_of(sid, self.factor):
                worker = self.workers[index]
                if worker.backlog > self.max_backlog:
                    worker.shed += 1        # a lagging copy gets no new session
                    continue
                worker.sessions += 1
                workers.append(worker)
        for chunk in stream.chunks[first:]:
            data = base64.b64encode(chunk.data).decode()
            for worker in workers:
                worker.send({"s": sid, "d": data})

    def _ended(self, key: tuple, stream: Stream) -> None:
        sid = rec.session_id(key, stream.start or 0.0)
        end = "rst" if stream.reset else ("fin" if stream.fin_offset is not None else "open")
        for worker in self.routes.pop(sid, ()):
            worker.send({"s": sid, "end": end})

    def run(self, stopped: Callable[[], bool] = lambda: False,
            duration: float | None = None, ready: Callable[[], None] | None = None) -> dict:
        """Until ``stopped()`` or ``duration``; returns a summary (also per copy)."""
        socks = _open_sockets(self.capture_netns, self.ifname)
        out = None
        summary: dict = {"factor": self.factor, "target": self.target, "copies": []}
        try:
            if self.record_path:
                out = open(self.record_path, "w")  # noqa: SIM115 - closed below
            config = {"headers": list(self.headers), "key": (self.key or b"").hex()}
            for index in range(self.copies):
                self.workers.append(Worker(index, self.namespaces[index], self.target,
                                           self.out_dir, self.linger))
                self.workers[-1].send({"config": config})

            def emit(session: recording.Session) -> None:
                if out is not None:
                    out.write(recording.dumps(session) + "\n")
                    out.flush()

            recorder = rec.Recorder(emit, self.clients_key, on_data=self._on_data,
                                    on_end=self._ended)
            if ready is not None:
                ready()
            rec.capture(socks, recorder, stopped,
                        None if duration is None else time.monotonic() + duration)
            summary.update({"sessions": recorder.count, "segments": recorder.segments,
                            **rec.kernel_stats(socks)})
            for worker in self.workers:
                worker.close()
            deadline = time.monotonic() + self.linger + 10
            for worker in self.workers:
                summary["copies"].append(self._finish(worker, deadline))
        finally:            # an error, Ctrl-C, SIGTERM: no worker outlives the call
            for worker in self.workers:
                worker.close()
                proc.stop(worker.popen)
            for sock in socks:
                sock.close()
            if out is not None:
                out.close()
        return summary

    def _finish(self, worker: Worker, deadline: float) -> dict:
        try:
            code = worker.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            code = proc.stop(worker.popen)
        results = []
        if os.path.exists(worker.out):
            with open(worker.out) as handle:
                results = [json.loads(line) for line in handle if line.strip()]
        return {"copy": worker.index, "netns": worker.netns, "exit": code,
                "sessions": worker.sessions, "shed": worker.shed, "replayed": len(results),
                "errors": sum(1 for r in results if r["error"]), "out": worker.out}


def _open_sockets(capture_netns: str | None, ifname: str) -> list:
    if capture_netns is None:
        return rec.open_sockets(ifname)
    return netns_mod.call_here_in(netns_mod.path_of(capture_netns), rec.open_sockets, ifname)
