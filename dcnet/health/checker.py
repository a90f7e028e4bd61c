"""The checker behind ``elbctl health``: runs a model's health checks on their
intervals, writes the state file when a check changes state, and asks for a re-apply.

The probes run on an asyncio loop in one thread that lives in the target's network
namespace (:func:`dcnet.sysio.netns.start_thread_in`), at most ``concurrency`` at once.
A state change is written first (the target reads the file while it plans), then the
``apply`` callback runs in the caller's thread; a failed apply is retried every
``retry`` seconds until one succeeds, so a busy lock or a refused plan delays the change,
never loses it.
"""

from __future__ import annotations

import asyncio
import heapq
import queue
import threading
import time
from collections.abc import Callable

from dcnet.health import state
from dcnet.health.checks import Board, CheckKey, checks_of
from dcnet.health.probe import probe


class Checker:
    def __init__(self, model, state_path: str, apply: Callable[[], None],
                 log: Callable[[str], None] = lambda _t: None, netns_path: str | None = None,
                 concurrency: int = 256, retry: float = 2.0):
        self.state_path, self.apply, self.log = state_path, apply, log
        self.netns_path, self.concurrency, self.retry = netns_path, concurrency, retry
        self.board = Board()
        self.applies = 0
        self._lock = threading.Lock()
        self._changed: queue.Queue[bool] = queue.Queue()
        self._stop = threading.Event()
        self.follow(model)

    def follow(self, model) -> None:
        """Check what ``model`` asks for from now on (kept checks keep their state)."""
        with self._lock:
            self.board.sync(checks_of(model))
            self._due = [(0.0, key) for key in self.board.trackers]
            heapq.heapify(self._due)

    def settled(self) -> bool:
        with self._lock:
            return self.board.settled()

    def down(self) -> dict[str, str]:
        with self._lock:
            return {k.text: t.last for k, t in self.board.trackers.items() if not t.up}

    # ------------------------------------------------------------------ probing thread

    async def _loop(self) -> None:
        gate = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task] = set()
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                due = []
                while self._due and self._due[0][0] <= now:
                    due.append(heapq.heappop(self._due)[1])
                wake = self._due[0][0] - now if self._due else 0.5
            for key in due:
                task = asyncio.ensure_future(self._one(key, gate))
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.sleep(min(max(wake, 0.01), 0.5))
        for task in running:
            task.cancel()

    async def _one(self, key: CheckKey, gate: asyncio.Semaphore) -> None:
        with self._lock:
            tracker = self.board.trackers.get(key)
        if tracker is None:              # dropped by a new model meanwhile
            return
        async with gate:
            ok, detail = await probe(key, tracker.timing.timeout)
        with self._lock:
            if self.board.trackers.get(key) is not tracker:
                return
            changed = tracker.record(ok, detail)
            heapq.heappush(self._due, (time.monotonic() + tracker.timing.interval, key))
        if changed:
            self.log(f"{key.text}: {'up' if ok else 'down'} ({detail})")
            self._changed.put(True)

    def _thread_main(self) -> None:
        asyncio.run(self._loop())

    # ------------------------------------------------------------------ caller's thread

    def run(self, stop: Callable[[], bool] = lambda: False,
            until: Callable[[Checker], bool] | None = None) -> None:
        """Probe and apply until ``stop()`` is true, or until ``until(self)`` is: then
        the probes stop first and the last state is published before returning."""
        from dcnet.sysio import netns

        if self.netns_path:
            worker = netns.start_thread_in(self.netns_path, self._thread_main, name="health")
        else:
            worker = threading.Thread(target=self._thread_main, name="health", daemon=True)
            worker.start()
        pending = True                   # write the state and apply once at start
        try:
            while not stop():
                done = until is not None and until(self)
                if done:
                    self._stop.set()
                    worker.join(timeout=30)
                if self._wait_change(block=not done):
                    pending = True
                if pending:
                    pending = not self._publish()
                if done and not pending:
                    return
                if pending:
                    time.sleep(self.retry)
        finally:
            self._stop.set()
            worker.join(timeout=30)

    def _wait_change(self, block: bool = True) -> bool:
        try:
            self._changed.get(timeout=0.2) if block else self._changed.get_nowait()
        except queue.Empty:
            return False
        while not self._changed.empty():     # coalesce a burst of changes
            self._changed.get_nowait()
        return True

    def _publish(self) -> bool:
        down = self.down()
        state.write(self.state_path, down)
        try:
            self.apply()
        except Exception as exc:             # busy, refused, unavailable: retried
            self.log(f"apply failed, retrying in {self.retry:g}s: {exc}")
            return False
        self.applies += 1
        self.log(f"applied: {len(down)} check(s) down")
        return True
