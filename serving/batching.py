"""Dynamic micro-batching for inference: concurrent requests share one model call.

    batcher = MicroBatcher(fn, max_batch=8, max_wait_ms=100, max_queue=64)
    await batcher.start()                  # inside the running event loop (the app's lifespan)
    result = await batcher.submit(item)    # raises QueueFull when max_queue items are already waiting
    await batcher.close()

A dispatcher task waits for a free worker, takes the oldest waiting item and waits until `max_batch` items are
there or `max_wait_ms` have passed since that item arrived, whichever comes first, then runs
`fn(items) -> results` (same order and length) in a worker thread, so the event loop keeps accepting requests
while the model runs. With `workers` > 1, up to that many batches run at once (`fn` must be thread-safe: the
ONNX Runtime and torch backends are); on a CPU this uses the cores for whole batches instead of splitting each
small matrix product across them, which is what a small decoder step needs (see benchmarks/serving_batching.py).
When a batch is due and several workers are idle, the waiting items are shared evenly between them (8 waiting,
2 idle workers: two batches of 4 at once) rather than one full batch leaving the other worker idle.
Items that arrive while the workers are busy queue up and usually leave at once as the next (full) batch, since
their wait started when they arrived. Requests whose caller went away (cancelled futures) are dropped before a
batch is formed. When a whole batch fails, its items are retried one by one so that one bad item fails alone.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The bounded queue is full; retry after `retry_after` seconds (→ HTTP 429 with Retry-After)."""

    def __init__(self, depth: int, retry_after: int):
        super().__init__(f"the inference queue is full ({depth} requests waiting); retry in {retry_after} s")
        self.depth, self.retry_after = depth, retry_after


class BatcherClosed(RuntimeError):
    """The batcher is not running (not started yet, or shut down)."""


@dataclass
class _Pending:
    item: Any
    future: asyncio.Future
    enqueued: float


class MicroBatcher:
    """Asyncio micro-batcher around a blocking batch function (see the module docstring).

    on_batch(size, seconds) is called after each model call; on_queue_depth(n) whenever the queue changes
    (hooks for metrics; they must not raise).
    """

    def __init__(self, fn: Callable[[list], list], max_batch: int = 8, max_wait_ms: float = 100.0,
                 max_queue: int = 64, on_batch: Callable[[int, float], None] | None = None,
                 on_queue_depth: Callable[[int], None] | None = None, name: str = "rrg-infer", workers: int = 1):
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0 or workers < 1:
            raise ValueError(f"max_batch, max_queue and workers must be ≥ 1 and max_wait_ms ≥ 0, got "
                             f"{max_batch}, {max_queue}, {workers}, {max_wait_ms}")
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait_ms / 1000.0
        self.max_queue, self.workers = max_queue, workers
        self._slots: asyncio.Semaphore | None = None
        self._idle = workers               # workers without a batch (the dispatcher's own slot included)
        self._released = 0                 # items already due, left for the next idle worker(s)
        self._running: set[asyncio.Task] = set()
        self.on_batch, self.on_queue_depth = on_batch, on_queue_depth
        self._name = name
        self._pending: collections.deque[_Pending] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = True
        self._batch_seconds = 1.0          # running estimate of one model call, for Retry-After
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=1000)   # recent sizes (tests, logs)

    # ---- lifecycle

    async def start(self) -> "MicroBatcher":
        if self._task is not None:
            return self
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(self.workers)
        self._idle, self._released = self.workers, 0
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=self._name)
        self._closed = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)
        return self

    async def close(self) -> None:
        """Stop taking requests, fail the waiting ones, let the running batches finish."""
        self._closed = True
        while self._pending:
            pending = self._pending.popleft()
            if not pending.future.done():
                pending.future.set_exception(BatcherClosed("the service is shutting down"))
        self._report_depth()
        if self._task is not None:
            self._wakeup.set()
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closed

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    # ---- submitting

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained: waiting batches × the recent time per model call / workers."""
        batches = math.ceil(len(self._pending) / self.max_batch) + 1
        return max(1, math.ceil(batches * self._batch_seconds / self.workers))

    async def submit(self, item: Any) -> Any:
        if not self.running:
            raise BatcherClosed("the inference worker is not running")
        if len(self._pending) >= self.max_queue:
            self._prune()
            if len(self._pending) >= self.max_queue:
                raise QueueFull(len(self._pending), self.retry_after())
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(item, future, time.monotonic()))
        self._report_depth()
        self._wakeup.set()
        return await future

    # ---- the worker

    def _prune(self) -> None:
        """Drop requests whose caller is gone (client disconnected, request cancelled)."""
        if any(p.future.done() for p in self._pending):
            self._pending = collections.deque(p for p in self._pending if not p.future.done())
            self._report_depth()

    def _report_depth(self) -> None:
        if self.on_queue_depth is not None:
            self.on_queue_depth(len(self._pending))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            await self._slots.acquire()                    # a worker is free: form its batch
            dispatched = False
            try:
                dispatched = await self._dispatch(loop)
            finally:
                if not dispatched:
                    self._slots.release()

    def _take(self, n: int) -> list[_Pending]:
        batch: list[_Pending] = []
        while self._pending and len(batch) < n:
            pending = self._pending.popleft()
            if not pending.future.done():
                batch.append(pending)
        self._report_depth()
        return batch

    async def _dispatch(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Wait for the next batch and start it on the free worker; False when there was none to start."""
        while not self._closed:
            self._prune()
            self._released = min(self._released, len(self._pending))
            if self._released:                             # due already: shared out by the previous dispatch
                batch = self._take(min(self._released, self.max_batch))
                self._released -= len(batch)
                if batch:
                    self._start(loop, batch)
                    return True
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            deadline = self._pending[0].enqueued + self.max_wait
            while len(self._pending) < self.max_batch and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                self._prune()
                if not self._pending:
                    break
            self._prune()
            due = min(len(self._pending), self.max_batch * self._idle)
            size = math.ceil(due / self._idle) if due else 0
            self._released = due - size                    # the rest goes to the other idle workers at once
            batch = self._take(size)
            if batch:
                self._start(loop, batch)
                return True
        return False

    def _start(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        self._idle -= 1
        task = loop.create_task(self._execute_then_free(loop, batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _execute_then_free(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        try:
            await self._execute(loop, batch)
        finally:
            self._idle += 1
            self._slots.release()

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self.fn, [p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
        except Exception as exc:  # noqa: BLE001 — isolate the failing item(s) and report per request
            if len(batch) == 1:
                self._finish(batch, exc=exc)
            else:
                log.warning("a batch of %d failed (%s); retrying its items one by one", len(batch), type(exc).__name__)
                for pending in batch:
                    await self._execute(loop, [pending])
            return
        seconds = time.perf_counter() - started
        self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * seconds if self.batch_sizes else seconds
        self.batch_sizes.append(len(batch))
        if self.on_batch is not None:
            self.on_batch(len(batch), seconds)
        self._finish(batch, results=results)

    @staticmethod
    def _finish(batch: list[_Pending], results: list | None = None, exc: BaseException | None = None) -> None:
        for i, pending in enumerate(batch):
            if pending.future.done():
                continue
            if exc is not None:
                pending.future.set_exception(exc)
            else:
                pending.future.set_result(results[i])
