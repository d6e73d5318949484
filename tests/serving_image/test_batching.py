"""Dynamic batching on its own: coalescing, splitting, the bounded queue, and fault isolation."""

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serving_image.batching import BatchResult, DynamicBatcher, Feeds
from serving_image.errors import InvalidInput, Overloaded
from tests.serving_image.conftest import wait_until_async


class Recorder:
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.depths: list[int] = []

    def on_batch(self, rows: int, compute_seconds: float) -> None:
        self.batches.append(rows)

    def on_queue_depth(self, depth: int) -> None:
        self.depths.append(depth)


def doubling(feeds: Feeds) -> list[np.ndarray]:
    if (feeds["x"] < 0).any():
        raise InvalidInput("negative values are not allowed")
    return [feeds["x"] * 2]


def make(
    run: Callable[[Feeds], list[np.ndarray]] = doubling,
    *,
    max_batch_size: int = 8,
    delay: float = 0.05,
    queue: int = 64,
    gate: threading.Event | None = None,
) -> tuple[DynamicBatcher, Recorder]:
    recorder = Recorder()

    def gated(feeds: Feeds) -> list[np.ndarray]:
        if gate is not None:
            gate.wait(5)
        return run(feeds)

    batcher = DynamicBatcher(
        gated,
        max_batch_size=max_batch_size,
        max_queue_delay=delay,
        max_queue_size=queue,
        executor=ThreadPoolExecutor(1),
        observer=recorder,
        label="m/1",
    )
    return batcher, recorder


async def call(batcher: DynamicBatcher, feeds: Feeds) -> BatchResult:
    """Submit from inside a task, as a request handler does; a refusal is this task's exception."""
    return await batcher.submit(feeds, len(feeds["x"]))


def rows(start: int, count: int = 1) -> Feeds:
    return {"x": np.arange(start, start + count, dtype=np.float32).reshape(count, 1)}


def test_concurrent_requests_share_one_run_and_get_their_own_rows() -> None:
    async def scenario() -> tuple[list[np.ndarray], list[int]]:
        batcher, recorder = make()
        results = await asyncio.gather(*(batcher.submit(rows(10 * n, 2), 2) for n in range(4)))
        await batcher.stop()
        return [r.outputs[0] for r in results], recorder.batches

    outputs, batches = asyncio.run(scenario())
    for n, output in enumerate(outputs):
        np.testing.assert_array_equal(
            output, rows(10 * n, 2)["x"] * 2, err_msg=f"request {n} got another's rows"
        )
    assert batches == [8], f"4 requests of 2 rows within the delay must form one batch of 8, got {batches}"


def test_batches_never_exceed_max_batch_size() -> None:
    async def scenario() -> list[int]:
        batcher, recorder = make(max_batch_size=4)
        await asyncio.gather(*(batcher.submit(rows(n), 1) for n in range(10)))
        await batcher.stop()
        return recorder.batches

    batches = asyncio.run(scenario())
    assert sum(batches) == 10 and max(batches) <= 4, batches


def test_full_queue_refuses_at_once() -> None:
    gate = threading.Event()

    async def scenario() -> tuple[int, int]:
        # Slow runs go to the executor, so the queue really fills while one batch computes.
        batcher, _ = make(max_batch_size=1, delay=0, queue=2, gate=gate)
        batcher.record_cost(1.0, 1)
        tasks = [asyncio.create_task(call(batcher, rows(n))) for n in range(6)]
        # Refused at once: while the first batch is still held at the gate.
        await wait_until_async(
            lambda: sum(task.done() for task in tasks) >= 3, 5, "the full queue did not refuse at once"
        )
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.stop()
        refused = sum(isinstance(r, Overloaded) for r in results)
        served = sum(not isinstance(r, BaseException) for r in results)
        return refused, served

    refused, served = asyncio.run(scenario())
    assert refused >= 3, f"with one running and two queued, the rest must be refused; refused {refused}"
    assert served + refused == 6, "every request is answered"


def test_one_bad_request_does_not_fail_its_batch_neighbours() -> None:
    async def scenario() -> list[object]:
        batcher, _ = make()
        feeds = [rows(1), {"x": np.array([[-1.0]], dtype=np.float32)}, rows(3)]
        results = await asyncio.gather(*(batcher.submit(f, 1) for f in feeds), return_exceptions=True)
        await batcher.stop()
        return list(results)

    good, bad, other = asyncio.run(scenario())
    assert isinstance(bad, InvalidInput), bad
    assert isinstance(good, BatchResult) and good.outputs[0].tolist() == [[2.0]]
    assert isinstance(other, BatchResult) and other.outputs[0].tolist() == [[6.0]]


def test_stop_finishes_queued_work() -> None:
    async def scenario() -> int:
        batcher, _ = make(delay=0.2)
        pending = [asyncio.create_task(call(batcher, rows(n))) for n in range(3)]
        await asyncio.sleep(0)
        assert batcher.depth == 3, "the requests wait for the queue delay"
        await batcher.stop()
        assert batcher.depth == 0, "stop returns only once the queue is empty"
        # The answers are already set; their tasks need one more turn of the loop to finish.
        done, _ = await asyncio.wait(pending, timeout=0.05)
        return sum(task.exception() is None for task in done)

    assert asyncio.run(scenario()) == 3


def test_no_stacking_runs_requests_alone() -> None:
    async def scenario() -> list[int]:
        batcher, recorder = make(max_batch_size=0)
        await asyncio.gather(*(batcher.submit(rows(n), 1) for n in range(3)))
        await batcher.stop()
        return recorder.batches

    assert asyncio.run(scenario()) == [1, 1, 1]


@pytest.mark.parametrize("delay", [0.0, 0.01])
def test_a_lone_request_is_served(delay: float) -> None:
    async def scenario() -> list[list[float]]:
        batcher, _ = make(delay=delay)
        result = await asyncio.wait_for(batcher.submit(rows(5), 1), 2)
        await batcher.stop()
        values: list[list[float]] = result.outputs[0].tolist()
        return values

    assert asyncio.run(scenario()) == [[10.0]]
