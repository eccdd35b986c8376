"""A fixed pool of generation threads behind an admission limit (backpressure, never unbounded threads).

`submit` admits a job only while fewer than workers + max_queue jobs are pending; otherwise it raises
QueueFull with an estimate of when to retry, which the app turns into 429 + Retry-After. Shutdown
lets every admitted job finish: a request that got in is answered.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from typing import Any, Callable

log = logging.getLogger("ganvas.server")


class QueueFull(Exception):
    def __init__(self, pending: int, retry_after: float):
        super().__init__(f"{pending} requests are pending; the queue is full")
        self.pending, self.retry_after = pending, retry_after


class PoolClosed(Exception):
    """The server is shutting down and takes no new work."""


_STOP = object()


class WorkerPool:
    def __init__(
        self,
        workers: int,
        max_queue: int,
        *,
        name: str = "ganvas-worker",
        initializer: Callable[[], None] | None = None,
    ):
        if workers < 1 or max_queue < 0:
            raise ValueError("workers must be >= 1 and max_queue >= 0")
        self.workers, self.max_queue = workers, max_queue
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()  # bounded by admission, not by the queue
        self._lock = threading.Lock()
        self._pending = 0  # admitted and not finished (waiting + running)
        self._running = 0
        self._closed = False
        self._avg_s = 0.05  # moving average of job time, for Retry-After
        self.completed = self.rejected = 0
        self._initializer = initializer
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    # --- state -----------------------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.workers + self.max_queue

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "pending": self._pending,
                "running": self._running,
                "waiting": self._pending - self._running,
                "capacity": self.capacity,
                "workers": self.workers,
                "completed": self.completed,
                "rejected": self.rejected,
            }

    def retry_after(self, pending: int | None = None) -> float:
        """Seconds until a slot is likely free: the jobs ahead, spread over the workers."""
        pending = self._pending if pending is None else pending
        return min(60.0, max(0.1, self._avg_s * max(1, pending - self.max_queue + 1) / self.workers))

    # --- use -------------------------------------------------------------------------------------------
    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        with self._lock:
            if self._closed:
                raise PoolClosed("the server is shutting down")
            if self._pending >= self.capacity:
                self.rejected += 1
                raise QueueFull(self._pending, self.retry_after(self._pending))
            self._pending += 1
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((fn, future))
        return future

    def shutdown(self, wait: bool = True, timeout: float | None = None) -> bool:
        """Refuse new jobs, let admitted ones finish, stop the threads. True if all stopped in time."""
        with self._lock:
            if not self._closed:
                self._closed = True
                for _ in self._threads:
                    self._jobs.put(_STOP)
        if not wait:
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _loop(self) -> None:
        if self._initializer is not None:
            self._initializer()
        while True:
            item = self._jobs.get()
            if item is _STOP:
                return
            fn, future = item
            try:
                if not future.set_running_or_notify_cancel():  # the client went away before it started
                    continue
                with self._lock:
                    self._running += 1
                start = time.perf_counter()
                try:
                    future.set_result(fn())
                except BaseException as exc:  # delivered to the awaiting request, never kills the worker
                    future.set_exception(exc)
                finally:
                    elapsed = time.perf_counter() - start
                    with self._lock:
                        self._running -= 1
                        self._avg_s = 0.8 * self._avg_s + 0.2 * elapsed
                        self.completed += 1
            finally:
                with self._lock:
                    self._pending -= 1
