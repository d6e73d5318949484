"""Dynamic batching: concurrent requests for one model version coalesced into one ONNX Runtime run."""

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from serving_image.errors import InvalidInput, Overloaded, ServingError

Feeds = dict[str, np.ndarray]

# Batches that compute faster than this run on the event loop itself: handing them to a
# thread costs more CPU (a wake-up and a GIL hand-off each way) than the run. Slower
# models go to the executor so the loop keeps answering health checks and parsing.
INLINE_COMPUTE_SECONDS = 0.002


class BatchObserver(Protocol):
    """Receives what a batcher does, for metrics; kept out of the batching logic."""

    def on_batch(self, rows: int, compute_seconds: float) -> None:
        """A batch of ``rows`` rows ran in ``compute_seconds``."""

    def on_queue_depth(self, depth: int) -> None:
        """The number of requests waiting changed."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One request's share of a batch run."""

    outputs: list[np.ndarray]
    queue_seconds: float
    compute_seconds: float


@dataclass(slots=True)
class _Pending:
    feeds: Feeds
    rows: int
    future: asyncio.Future[BatchResult]
    enqueued_at: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """A bounded queue in front of one model version, drained by one task.

    The task takes what is queued, up to ``max_batch_size`` rows, waiting at most
    ``max_queue_delay`` seconds for more; with no delay it takes only what is already
    there, so a lone request never waits and a busy model still gets full batches while
    the previous batch computes. When the queue is full, ``submit`` refuses at once.
    """

    def __init__(
        self,
        run: Callable[[Feeds], list[np.ndarray]],
        *,
        max_batch_size: int,
        max_queue_delay: float,
        max_queue_size: int,
        executor: Executor,
        observer: BatchObserver,
        label: str,
    ) -> None:
        self._run = run
        self._max_rows = max(1, max_batch_size)
        self._stacking = max_batch_size > 0
        self._delay = max_queue_delay
        self._max_queue = max_queue_size
        self._executor = executor
        self._observer = observer
        self._label = label
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._seconds_per_row = 0.0

    def start(self) -> None:
        """Start the draining task on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._drain(), name=f"batcher {self._label}")

    async def stop(self) -> None:
        """Finish what is queued and running, then stop."""
        if self._task is None:
            return
        self._closing = True
        self._wakeup.set()
        await self._task
        self._task = None

    def record_cost(self, seconds: float, rows: int) -> None:
        """Learn how long a row takes, which decides where the next batch runs."""
        per_row = seconds / max(rows, 1)
        self._seconds_per_row = per_row if not self._seconds_per_row else 0.8 * self._seconds_per_row + 0.2 * per_row

    @property
    def depth(self) -> int:
        """Requests waiting."""
        return len(self._queue)

    async def submit(self, feeds: Feeds, rows: int) -> BatchResult:
        """Queue one request's inputs and wait for its rows of the outputs."""
        if len(self._queue) >= self._max_queue:
            raise Overloaded(f"model '{self._label}' queue is full ({self._max_queue} waiting); retry later")
        pending = _Pending(feeds, rows, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._observer.on_queue_depth(len(self._queue))
        self._wakeup.set()
        return await pending.future

    async def _drain(self) -> None:
        while not (self._closing and not self._queue):
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = await self._take_batch()
            if batch:
                await self._execute(batch)

    async def _take_batch(self) -> list[_Pending]:
        if self._delay > 0 and self._stacking:
            deadline = time.perf_counter() + self._delay
            while self._queued_rows() < self._max_rows and (left := deadline - time.perf_counter()) > 0:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except TimeoutError:
                    break
        batch: list[_Pending] = []
        rows = 0
        while self._queue:
            head = self._queue[0]
            if batch and (not self._stacking or rows + head.rows > self._max_rows):
                break
            self._queue.popleft()
            if head.future.done():  # the caller went away while waiting
                continue
            batch.append(head)
            rows += head.rows
        self._observer.on_queue_depth(len(self._queue))
        return batch

    def _queued_rows(self) -> int:
        return sum(pending.rows for pending in self._queue)

    async def _execute(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            rows = sum(pending.rows for pending in batch)
            if self._seconds_per_row * rows < INLINE_COMPUTE_SECONDS:
                outputs = self._run_stacked(batch)
            else:
                outputs = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._run_stacked, batch
                )
        except InvalidInput as error:
            if len(batch) > 1:  # one bad request must not fail its neighbours: run each alone
                for pending in batch:
                    await self._execute([pending])
                return
            _fail(batch, error)
            return
        except Exception as error:
            _fail(batch, error)
            return
        compute = time.perf_counter() - started
        self.record_cost(compute, rows)
        self._observer.on_batch(rows, compute)
        offset = 0
        for pending in batch:
            share = (
                [output[offset : offset + pending.rows] for output in outputs] if len(batch) > 1 else outputs
            )
            offset += pending.rows
            if not pending.future.done():
                pending.future.set_result(BatchResult(share, started - pending.enqueued_at, compute))

    def _run_stacked(self, batch: list[_Pending]) -> list[np.ndarray]:
        if len(batch) == 1:
            return self._run(batch[0].feeds)
        names = batch[0].feeds.keys()
        stacked = {name: np.concatenate([pending.feeds[name] for pending in batch]) for name in names}
        outputs = self._run(stacked)
        total = sum(pending.rows for pending in batch)
        for output in outputs:
            if output.shape[:1] != (total,):
                raise ServingError(f"model '{self._label}' returned {output.shape} for a batch of {total}")
        return outputs


def _fail(batch: list[_Pending], error: Exception) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)
