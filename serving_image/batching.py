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
        """Requests still waiting when a batch is taken (sampled per batch, not per request)."""


class BatchTracer(Protocol):
    """Receives each batch's timing and its requests' trace handles (serving_image/tracing.py)."""

    def on_batch(
        self, label: str, requests: list[tuple[object, float]], started: float, compute_seconds: float,
        rows: int,
    ) -> None:  # fmt: skip
        """A batch ran; ``requests`` holds each request's trace handle and enqueue time."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One request's share of a batch run."""

    outputs: list[np.ndarray]
    queue_seconds: float
    compute_seconds: float
    """The whole batch's run."""
    compute_share: float = 0.0
    """This request's share of it, by rows: what the experiment's cost guardrail adds up per version."""


@dataclass(slots=True)
class _Pending:
    feeds: Feeds
    rows: int
    future: asyncio.Future[BatchResult]
    enqueued_at: float = field(default_factory=time.perf_counter)
    trace: object = None  # the request's span when tracing is on


class DynamicBatcher:
    """A bounded queue in front of one model version.

    A flush takes what is queued, up to ``max_batch_size`` rows. With no queue delay the
    flush runs as soon as the event loop has read the requests that arrived together, so
    a lone request never waits and a busy model still gets full batches; with a delay it
    runs when the delay has passed or the batch is full. One batch computes at a time;
    requests arriving meanwhile form the next. When the queue is full, ``submit`` refuses
    at once instead of queueing without bound.
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
        tracer: BatchTracer | None = None,
    ) -> None:
        self._run = run
        self._max_rows = max(1, max_batch_size)
        self._stacking = max_batch_size > 0
        self._delay = max_queue_delay if self._stacking else 0.0
        self._max_queue = max_queue_size
        self._executor = executor
        self._observer = observer
        self._label = label
        self._tracer = tracer
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._flush_handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self._computing = False
        self._seconds_per_row = 0.0

    def record_cost(self, seconds: float, rows: int) -> None:
        """Learn how long a row takes, which decides where the next batch runs."""
        per_row = seconds / max(rows, 1)
        self._seconds_per_row = (
            per_row if not self._seconds_per_row else 0.8 * self._seconds_per_row + 0.2 * per_row
        )

    @property
    def depth(self) -> int:
        """Requests waiting."""
        return len(self._queue)

    async def stop(self) -> None:
        """Wait until everything queued or computing is answered."""
        while self._queue or self._computing:
            await asyncio.sleep(0.005)

    def submit(self, feeds: Feeds, rows: int, trace: object = None) -> "asyncio.Future[BatchResult]":
        """Queue one request's inputs; the future resolves to its rows of the outputs."""
        if len(self._queue) >= self._max_queue:
            raise Overloaded(f"model '{self._label}' queue is full ({self._max_queue} waiting); retry later")
        loop = asyncio.get_running_loop()
        pending = _Pending(feeds, rows, loop.create_future(), trace=trace)
        self._queue.append(pending)
        self._queued_rows += rows
        self._schedule(loop)
        return pending.future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._computing:
            return  # the running batch flushes again when it is done
        full = self._queued_rows >= self._max_rows
        if self._flush_handle is not None:
            if not full or not isinstance(self._flush_handle, asyncio.TimerHandle):
                return
            self._flush_handle.cancel()  # the batch filled up before the delay ran out
        if self._delay and not full:
            self._flush_handle = loop.call_later(self._delay, self._flush)
        else:
            self._flush_handle = loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        while self._queue and not self._computing:
            batch = self._take_batch()
            if not batch:
                continue
            rows = sum(pending.rows for pending in batch)
            if self._seconds_per_row * rows < INLINE_COMPUTE_SECONDS:
                self._compute(batch, rows)
            else:
                self._computing = True
                asyncio.get_running_loop().create_task(self._compute_in_executor(batch, rows))
        if self._queue and not self._computing and self._flush_handle is None:
            self._schedule(asyncio.get_running_loop())

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        rows = 0
        while self._queue:
            head = self._queue[0]
            if batch and (not self._stacking or rows + head.rows > self._max_rows):
                break
            self._queue.popleft()
            self._queued_rows -= head.rows
            if head.future.done():  # the caller went away while waiting
                continue
            batch.append(head)
            rows += head.rows
        self._observer.on_queue_depth(len(self._queue))
        return batch

    def _compute(self, batch: list[_Pending], rows: int) -> None:
        started = time.perf_counter()
        try:
            outputs = self._run_stacked(batch, rows)
        except Exception as error:
            self._fail(batch, error)
            return
        self._deliver(batch, rows, outputs, started)

    async def _compute_in_executor(self, batch: list[_Pending], rows: int) -> None:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self._executor, self._run_stacked, batch, rows)
        except Exception as error:
            self._fail(batch, error)
        else:
            self._deliver(batch, rows, outputs, started)
        finally:
            self._computing = False
            if self._queue:
                self._schedule(loop)

    def _fail(self, batch: list[_Pending], error: Exception) -> None:
        if isinstance(error, InvalidInput) and len(batch) > 1:
            # One bad request must not fail its neighbours: run each alone.
            for pending in batch:
                self._compute([pending], pending.rows)
            return
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(error)

    def _deliver(self, batch: list[_Pending], rows: int, outputs: list[np.ndarray], started: float) -> None:
        compute = time.perf_counter() - started
        self.record_cost(compute, rows)
        self._observer.on_batch(rows, compute)
        if self._tracer is not None:
            traced = [(pending.trace, pending.enqueued_at) for pending in batch]
            self._tracer.on_batch(self._label, traced, started, compute, rows)
        offset = 0
        for pending in batch:
            end = offset + pending.rows
            share = [output[offset:end] for output in outputs] if len(batch) > 1 else outputs
            offset = end
            if not pending.future.done():
                cost = compute * pending.rows / max(rows, 1)
                pending.future.set_result(BatchResult(share, started - pending.enqueued_at, compute, cost))

    def _run_stacked(self, batch: list[_Pending], rows: int) -> list[np.ndarray]:
        if len(batch) == 1:
            return self._run(batch[0].feeds)
        names = batch[0].feeds.keys()
        stacked = {name: np.concatenate([pending.feeds[name] for pending in batch]) for name in names}
        outputs = self._run(stacked)
        for output in outputs:
            if output.shape[:1] != (rows,):
                raise ServingError(f"model '{self._label}' returned {output.shape} for a batch of {rows}")
        return outputs
