"""The job queue against a real redis-server, in-process: each step of a job's life and each guarantee.

What these prove that the server tests cannot isolate: the bound is exact, a result is stored
once whoever finishes last, a redelivered job whose result exists is acknowledged without a run,
nothing is claimed before its visibility timeout, and a dead letter keeps its reason and body.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from serving_image.errors import Overloaded, QueueUnavailable
from serving_image.job_queue import GROUP, Dead, Delivery, Done, JobQueue, NewJob, Retry, valid_job_id
from serving_image.settings import Settings
from tests.serving_image.async_jobs import opened
from tests.serving_image.conftest import free_port
from tests.serving_image.redis_fixture import RedisServer

T = TypeVar("T")


def new_job(
    model: str = "doubler", body: bytes = b'{"inputs": []}', header_length: int | None = None
) -> NewJob:
    return NewJob(
        model=model, version="1", version_requested=None, body=body, header_length=header_length,
        caller="alice", request_id="req-1",
    )  # fmt: skip


def run(test: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(test())


async def eventually(take: Callable[[], Awaitable[list[Delivery]]], timeout: float = 10) -> list[Delivery]:
    """Poll ``take`` until it returns something (a claim waits for the visibility timeout to pass)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await take()
        if found:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"nothing was taken in {timeout} s")


def job_keys(redis_server: RedisServer) -> int:
    return sum(1 for _ in redis_server.client().scan_iter("job:*"))


def test_the_bound_refuses_with_429_and_a_finished_job_makes_room(
    redis_server: RedisServer, job_stream: str
) -> None:
    async def test() -> None:
        async with opened(redis_server.url, job_stream, async_max_queued=3) as queue:
            for _ in range(3):
                await queue.submit(new_job())
            keys = job_keys(redis_server)
            with pytest.raises(Overloaded) as refused:
                await queue.submit(new_job())
            assert refused.value.status == 429, refused.value.status
            assert refused.value.message == "the job queue is full (3 jobs waiting or running); retry later"
            assert job_keys(redis_server) == keys, "a refused job leaves no hash behind"
            assert await queue.depth() == 3, "the bound is exact"
            [delivery] = await queue.read("c1", 1, 0)
            await queue.begin([delivery], "c1")
            await queue.finish([(delivery, Done(b"{}", "1"))])
            assert valid_job_id(await queue.submit(new_job())), "a finished job frees its place"

    run(test)


def test_a_job_goes_from_pending_to_running_to_done_and_its_result_expires_later(
    redis_server: RedisServer, job_stream: str
) -> None:
    async def test() -> None:
        async with opened(redis_server.url, job_stream, async_result_ttl_s=60) as queue:
            job_id = await queue.submit(new_job(body=b"head+binary", header_length=4))
            pending = await queue.status(job_id)
            assert pending is not None and pending.state == "pending", pending
            assert (pending.model, pending.caller, pending.attempts, pending.result) == (
                "doubler",
                "alice",
                0,
                None,
            )
            [delivery] = await queue.read("c1", 10, 0)
            assert (delivery.job_id, delivery.attempts) == (job_id, 1), delivery
            assert (delivery.body, delivery.header_length, delivery.version) == (b"head+binary", 4, "1"), (
                delivery
            )
            assert await queue.begin([delivery], "c1") == [True]
            running = await queue.status(job_id)
            assert running is not None and running.state == "running" and running.attempts == 1, running
            assert await queue.finish([(delivery, Done(b'{"outputs": []}', "1"))]) == [True]
            done = await queue.status(job_id)
            assert done is not None and done.state == "done", done
            assert (done.result, done.version, done.error) == (b'{"outputs": []}', "1", None), done
            assert done.finished is not None and done.finished >= done.created, done
            assert await queue.depth() == 0, "a finished job's entry is deleted"
            client = redis_server.client()
            assert client.xpending(job_stream, GROUP)["pending"] == 0, "and acknowledged"
            ttl = client.pttl(f"job:{job_id}")
            assert 0 < ttl <= 60_000, f"the result expires after async_result_ttl_s, PTTL {ttl}"

    run(test)


def test_a_second_completion_stores_nothing_and_the_first_result_stands(
    redis_server: RedisServer, job_stream: str
) -> None:
    async def test() -> None:
        async with opened(redis_server.url, job_stream) as queue:
            job_id = await queue.submit(new_job())
            [delivery] = await queue.read("c1", 1, 0)
            await queue.begin([delivery], "c1")
            assert await queue.finish([(delivery, Done(b"first", "1"))]) == [True]
            assert await queue.finish([(delivery, Done(b"second", "2"))]) == [False], "stored twice"
            assert await queue.finish([(delivery, Retry("late failure"))]) == [False], "a done job is final"
            done = await queue.status(job_id)
            assert done is not None and (done.result, done.version, done.state) == (b"first", "1", "done"), (
                done
            )

    run(test)


def test_a_redelivered_job_whose_result_exists_is_acknowledged_without_a_run(
    redis_server: RedisServer, job_stream: str
) -> None:
    async def test() -> None:
        async with opened(redis_server.url, job_stream, async_visibility_timeout_s=0.05) as queue:
            job_id = await queue.submit(new_job())
            [slow] = await queue.read("c1", 1, 0)
            assert await queue.begin([slow], "c1") == [True]
            # c1 runs past the visibility timeout: c2 is handed the job ...
            [again] = await eventually(lambda: _claimed(queue, "c2"))
            assert (again.job_id, again.attempts) == (job_id, 2), again
            # ... c1 finishes first, and c2 must not run it again.
            assert await queue.finish([(slow, Done(b"by c1", "1"))]) == [True]
            assert await queue.begin([again], "c2") == [False], "a job with a result must not run again"
            client = redis_server.client()
            assert client.xpending(job_stream, GROUP)["pending"] == 0, "the redelivery is acknowledged"
            done = await queue.status(job_id)
            assert done is not None and done.result == b"by c1", done

    run(test)


async def _claimed(queue: JobQueue, consumer: str) -> list[Delivery]:
    deliveries, _ = await queue.claim(consumer, 10, "0-0")
    return deliveries


def test_nothing_is_claimed_before_its_visibility_timeout(redis_server: RedisServer, job_stream: str) -> None:
    async def test() -> None:
        async with opened(redis_server.url, job_stream, async_visibility_timeout_s=60) as queue:
            await queue.submit(new_job())
            [delivery] = await queue.read("c1", 1, 0)
            await queue.begin([delivery], "c1")
            claimed, cursor = await queue.claim("c2", 10, "0-0")
            assert (claimed, cursor) == ([], "0-0"), "a job its worker holds within the timeout is its own"

    run(test)


def test_a_failed_attempt_is_pending_with_its_error_and_delivered_again(
    redis_server: RedisServer, job_stream: str
) -> None:
    async def test() -> None:
        async with opened(redis_server.url, job_stream, async_visibility_timeout_s=0.05) as queue:
            job_id = await queue.submit(new_job())
            [first] = await queue.read("c1", 1, 0)
            await queue.begin([first], "c1")
            assert await queue.finish([(first, Retry("boom"))]) == [True]
            failed = await queue.status(job_id)
            assert failed is not None and (failed.state, failed.error) == ("pending", "boom"), failed
            assert await queue.depth() == 1, "the job stays queued for another attempt"
            [second] = await eventually(lambda: _claimed(queue, "c2"))
            assert (second.job_id, second.attempts) == (job_id, 2), second
            assert await queue.begin([second], "c2") == [True]
            assert await queue.finish([(second, Done(b"ok", "1"))]) == [True]
            done = await queue.status(job_id)
            assert done is not None and (done.state, done.error, done.attempts) == ("done", None, 2), done

    run(test)


def test_a_dead_letter_keeps_the_reason_the_attempts_and_the_body(
    redis_server: RedisServer, job_stream: str
) -> None:
    async def test() -> None:
        async with opened(redis_server.url, job_stream, async_result_ttl_s=60) as queue:
            job_id = await queue.submit(new_job(body=b"payload", header_length=3))
            [delivery] = await queue.read("c1", 1, 0)
            await queue.begin([delivery], "c1")
            await queue.finish([(delivery, Retry("model 'doubler' exploded"))])
            assert await queue.finish([(delivery, Dead("gave up", with_last_error=True))]) == [True]
            client: Any = redis_server.client()
            [(_, letter)] = client.xrange(f"{job_stream}:dead")
            expected = {
                b"id": job_id.encode(), b"reason": b"gave up; last error: model 'doubler' exploded",
                b"attempts": b"1", b"model": b"doubler", b"version": b"1", b"body": b"payload",
                b"header_length": b"3",
            }  # fmt: skip
            assert {key: letter[key] for key in expected} == expected, letter
            failed = await queue.status(job_id)
            assert failed is not None and failed.state == "failed", failed
            assert failed.error == "gave up; last error: model 'doubler' exploded", failed
            assert 0 < client.pttl(f"job:{job_id}") <= 60_000, "a failed job's record expires too"
            assert await queue.depth() == 0 and client.xpending(job_stream, GROUP)["pending"] == 0
            assert await queue.finish([(delivery, Dead("again"))]) == [False], "dead-lettered twice"
            assert client.xlen(f"{job_stream}:dead") == 1

    run(test)


def test_a_job_queued_before_the_group_existed_is_delivered(
    redis_server: RedisServer, job_stream: str
) -> None:
    async def test() -> None:
        queue = JobQueue.connect(Settings(async_redis_url=redis_server.url, async_stream=job_stream))
        try:
            job_id = await queue.submit(new_job())  # XADD makes the stream; no worker made the group yet
            await queue.ensure_group()
            await queue.ensure_group()  # a second process's start must not fail or reset the group
            [delivery] = await queue.read("c1", 10, 0)
            assert delivery.job_id == job_id, "the group reads from the stream's start"
        finally:
            await queue.close()

    run(test)


def test_unknown_and_malformed_ids_have_no_status(redis_server: RedisServer, job_stream: str) -> None:
    async def test() -> None:
        async with opened(redis_server.url, job_stream) as queue:
            assert await queue.status("0" * 32) is None
            assert await queue.status("job:*") is None
            assert await queue.status("A" * 32) is None, "ids are lower-case hex"

    run(test)


def test_an_unreachable_queue_is_503_and_nothing_else(job_stream: str) -> None:
    async def test() -> None:
        url = f"redis://127.0.0.1:{free_port()}/0"
        queue = JobQueue.connect(Settings(async_redis_url=url, async_stream=job_stream))
        try:
            for attempt in (queue.submit(new_job()), queue.status("0" * 32), queue.depth()):
                with pytest.raises(QueueUnavailable) as unavailable:
                    await attempt
                assert unavailable.value.status == 503, unavailable.value.status
                assert (
                    unavailable.value.message == "the job queue is unavailable (ConnectionError); retry later"
                )
        finally:
            await queue.close()

    run(test)
