"""Completion callbacks in the worker, in-process, against a real redis-server and a real receiver.

What these prove that the server tests cannot isolate: a job's callback URL travels with its entry
and its record; the step that stores a result or a dead letter marks the callback as being sent;
the reason a dead letter records (with the last error) is the one a callback reports; recording an
outcome never brings back an expired record; the callbacks a worker holds are bounded, and the
worker takes no more jobs until there is room; at shutdown the callbacks still going are given up,
logged and recorded.
"""

import asyncio
import io
import json
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from serving_image.access_log import AccessLog
from serving_image.dataplane import DataPlane
from serving_image.job_callbacks import CallbackPolicy, CallbackSender, parse_allowed_hosts, verify_signature
from serving_image.job_queue import (
    CallbackRecord,
    Dead,
    Delivery,
    Done,
    JobQueue,
    NewJob,
    Recorded,
    Retry,
)
from serving_image.job_worker import CallbackDispatch, JobWorker
from serving_image.metrics import Metrics
from serving_image.repository import Repository
from serving_image.server import serve
from serving_image.settings import Settings
from serving_image.tracking import RequestTracker
from tests.serving_image.async_jobs import opened
from tests.serving_image.callback_receiver import Answer, Receiver
from tests.serving_image.conftest import (
    doubler_graph,
    logged_events,
    save_model,
    wait_until_async,
    write_config,
)
from tests.serving_image.redis_fixture import RedisServer

T = TypeVar("T")
KEY = b"callback-test-key-" + b"x" * 32
HOOK = "https://hooks.example.com/jobs?tenant=a"


def run(test: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(test)


def new_job(callback_url: str | None = HOOK) -> NewJob:
    return NewJob(
        model="doubler", version="1", version_requested=None, body=b'{"inputs": []}', header_length=None,
        caller="alice", request_id="req-1", callback_url=callback_url,
    )  # fmt: skip


async def taken(queue: JobQueue, count: int = 1) -> list[Delivery]:
    deliveries = await queue.read("c1", count, 1000)
    assert len(deliveries) == count, f"{len(deliveries)} of {count} jobs read"
    assert await queue.begin(deliveries, "c1") == [True] * count, "each job is started"
    return deliveries


def policy(port: int, **knobs: Any) -> CallbackPolicy:
    values: dict[str, Any] = {"max_attempts": 1, "backoff_s": 0.01, "backoff_cap_s": 0.01, "timeout_s": 5.0}
    return CallbackPolicy(parse_allowed_hosts(f"http://127.0.0.1:{port}"), KEY, **(values | knobs))


def events(stream: io.BytesIO, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line["event"] == event]


# --- the queue ----------------------------------------------------------------------------------------------


def test_the_callback_url_travels_with_the_entry_and_the_record(
    redis_server: RedisServer, job_stream: str
) -> None:
    async def test() -> None:
        async with opened(redis_server.url, job_stream) as queue:
            job_id = await queue.submit(new_job())
            plain_id = await queue.submit(new_job(callback_url=None))
            first, plain = await taken(queue, 2)
            assert (first.job_id, first.callback_url) == (job_id, HOOK), first
            assert (plain.job_id, plain.callback_url) == (plain_id, None), plain
            status = await queue.status(job_id)
            assert status is not None and status.callback == CallbackRecord(HOOK, "pending", None, None), (
                status
            )
            plain_status = await queue.status(plain_id)
            assert plain_status is not None and plain_status.callback is None, "no callback, no record of one"
            assert await queue.complete([(first, Done(b"{}", "1")), (plain, Done(b"{}", "1"))]) == [
                Recorded(True), Recorded(True),
            ]  # fmt: skip
            done = await queue.status(job_id)
            assert done is not None and done.callback == CallbackRecord(HOOK, "sending", None, None), (
                "the step that stores the result marks the callback as being sent"
            )
            plain_done = await queue.status(plain_id)
            assert plain_done is not None and plain_done.callback is None, "no callback to send"

    run(test())


def test_a_dead_letter_reports_the_reason_it_recorded_and_keeps_the_callback_url(
    redis_server: RedisServer, job_stream: str
) -> None:
    async def test() -> None:
        async with opened(redis_server.url, job_stream) as queue:
            job_id = await queue.submit(new_job())
            [delivery] = await taken(queue)
            assert await queue.complete([(delivery, Retry("model 'doubler' exploded"))]) == [Recorded(True)]
            recorded = await queue.complete([(delivery, Dead("gave up", with_last_error=True))])
            reason = "gave up; last error: model 'doubler' exploded"
            assert recorded == [Recorded(True, reason)], recorded
            status = await queue.status(job_id)
            assert status is not None and (status.state, status.error) == ("failed", reason), status
            assert status.callback == CallbackRecord(HOOK, "sending", None, None), status.callback
            again = await queue.complete([(delivery, Dead("again"))])
            assert again == [Recorded(False)], "a job dead-lettered already is not moved twice"
            client: Any = redis_server.client()
            [(_, letter)] = client.xrange(f"{job_stream}:dead")
            assert letter[b"callback_url"] == HOOK.encode(), "a replayed dead letter keeps its callback"

    run(test())


def test_a_callback_outcome_is_recorded_without_touching_the_expiry_or_reviving_a_record(
    redis_server: RedisServer, job_stream: str
) -> None:
    async def test() -> None:
        async with opened(redis_server.url, job_stream, async_result_ttl_s=600) as queue:
            job_id = await queue.submit(new_job())
            [delivery] = await taken(queue)
            await queue.complete([(delivery, Done(b"{}", "1"))])
            detail = "delivered on attempt 2 (HTTP 204)"
            assert await queue.record_callback(job_id, "delivered", 2, detail), "the record exists"
            status = await queue.status(job_id)
            assert status is not None and status.callback == CallbackRecord(HOOK, "delivered", 2, detail)
            ttl = redis_server.client().pttl(f"job:{job_id}")
            assert 0 < ttl <= 600_000, f"the record keeps its expiry: {ttl}"
            gone = "0" * 32
            assert not await queue.record_callback(gone, "delivered", 1, detail), "nothing to record on"
            assert not redis_server.client().exists(f"job:{gone}"), "an expired record must not come back"

    run(test())


# --- the dispatch -------------------------------------------------------------------------------------------


def test_a_callback_is_signed_logged_and_recorded(redis_server: RedisServer, job_stream: str) -> None:
    log = io.BytesIO()

    async def test() -> Receiver:
        async with (
            Receiver(Answer(503), Answer(204)) as receiver,
            opened(redis_server.url, job_stream) as queue,
        ):
            hook = f"http://127.0.0.1:{receiver.port}/done"
            job_id = await queue.submit(new_job(hook))
            [delivery] = await taken(queue)
            await queue.complete([(delivery, Done(b'{"outputs":[]}', "1"))])
            dispatch = CallbackDispatch(queue, policy(receiver.port, max_attempts=3), AccessLog(log))
            dispatch.send(delivery, "done", "1", response=b'{"outputs":[]}')
            assert dispatch.pending == 1, "send returns at once, the callback going on in the background"
            await dispatch.stop(10)
            status = await queue.status(job_id)
            detail = "delivered on attempt 2 (HTTP 204)"
            assert status is not None and status.callback == CallbackRecord(hook, "delivered", 2, detail)
            assert dict(dispatch.counts) == {"delivered": 1}, dispatch.counts
            [line] = events(log, "job_callback")
            assert {key: line[key] for key in ("job_id", "delivered", "attempts", "status", "reason")} == {
                "job_id": job_id, "delivered": True, "attempts": 2, "status": 204, "reason": "HTTP 204",
            }, line  # fmt: skip
            return receiver

    receiver = run(test())
    assert len(receiver.requests) == 2, "a 503 then a 204: two attempts"
    for request in receiver.requests:
        document = json.loads(request.body)
        assert document["status"] == "done" and document["response"] == {"outputs": []}, document
        timestamp, signature = request.headers["x-signature-timestamp"], request.headers["x-signature"]
        assert verify_signature(KEY, request.body, timestamp, signature, time.time()), "signed with the key"


def test_the_worker_waits_for_room_when_the_callbacks_held_reach_the_bound(
    redis_server: RedisServer, job_stream: str
) -> None:
    async def test() -> None:
        async with Receiver(Answer(hang=True)) as receiver, opened(redis_server.url, job_stream) as queue:
            hook = f"http://127.0.0.1:{receiver.port}/"
            for _ in range(2):
                await queue.submit(new_job(hook))
            deliveries = await taken(queue, 2)
            dispatch = CallbackDispatch(queue, policy(receiver.port), AccessLog(io.BytesIO()), max_pending=2)
            dispatch.send(deliveries[0], "done", "1", response=b"{}")
            await asyncio.wait_for(dispatch.room(), 1)  # one held of two: room
            dispatch.send(deliveries[1], "done", "1", response=b"{}")
            await wait_until_async(lambda: len(receiver.requests) == 2, 10, "both callbacks are being sent")
            room = asyncio.create_task(dispatch.room())
            for _ in range(20):  # the loop runs on: the worker must still be waiting
                await asyncio.sleep(0)
            assert not room.done(), "two callbacks held of two: the worker must wait for room"
            receiver.release()  # the receiver closes both connections unanswered: the callbacks end
            await asyncio.wait_for(room, 10)
            await wait_until_async(lambda: dispatch.pending == 0, 10, "the callbacks did not end")
            assert dict(dispatch.counts) == {"gave_up": 2}, dispatch.counts

    run(test())


def test_at_shutdown_a_callback_still_going_is_given_up_logged_and_recorded(
    redis_server: RedisServer, job_stream: str
) -> None:
    log = io.BytesIO()

    async def test() -> None:
        async with Receiver(Answer(hang=True)) as receiver, opened(redis_server.url, job_stream) as queue:
            hook = f"http://127.0.0.1:{receiver.port}/"
            job_id = await queue.submit(new_job(hook))
            [delivery] = await taken(queue)
            await queue.complete([(delivery, Dead("attempt 1 of 1 failed: boom"))])
            dispatch = CallbackDispatch(queue, policy(receiver.port, timeout_s=60), AccessLog(log))
            dispatch.send(delivery, "failed", None, error="attempt 1 of 1 failed: boom")
            await wait_until_async(lambda: len(receiver.requests) == 1, 10, "the callback was not sent")
            started = time.monotonic()
            abandoned = await dispatch.stop(1.0)
            elapsed = time.monotonic() - started
            assert abandoned == 1 and elapsed < 2, (
                f"given up within the time left: {abandoned}, {elapsed:.2f} s"
            )
            reason = "the worker stopped before the callback was delivered"
            status = await queue.status(job_id)
            assert status is not None, "the record exists"
            detail = f"gave up after 1 attempt(s): {reason}"
            assert status.callback == CallbackRecord(hook, "failed", 1, detail), status.callback
            [line] = events(log, "job_callback")
            assert (line["delivered"], line["attempts"], line["reason"]) == (False, 1, reason), line
            document = json.loads(receiver.requests[0].body)
            assert document == {
                "id": job_id, "status": "failed", "model": "doubler", "version": None,
                "error": "attempt 1 of 1 failed: boom",
            }, document  # fmt: skip

    run(test())


def test_a_worker_without_callbacks_configured_records_the_callback_as_not_sent(
    redis_server: RedisServer, job_stream: str
) -> None:
    async def test() -> None:
        async with opened(redis_server.url, job_stream) as queue:
            job_id = await queue.submit(new_job())
            [delivery] = await taken(queue)
            await queue.complete([(delivery, Done(b"{}", "1"))])
            dispatch = CallbackDispatch(queue, None, AccessLog(io.BytesIO()))
            dispatch.send(delivery, "done", "1", response=b"{}")
            assert await dispatch.stop(10) == 0, "nothing to give up: the callback ended at once"
            status = await queue.status(job_id)
            detail = "gave up after 0 attempt(s): not sent: callbacks are not configured on this worker"
            assert status is not None and status.callback == CallbackRecord(HOOK, "failed", 0, detail)

    run(test())


class BrokenSender(CallbackSender):
    """A sender with a bug: the dispatch must log it and record the callback as given up."""

    async def send(self, url: str, document: bytes, on_attempt: Callable[[int], None] | None = None) -> Any:
        raise RuntimeError("a bug in the sender")


def test_a_bug_in_sending_is_logged_with_its_trace_and_the_callback_recorded_as_given_up(
    redis_server: RedisServer, job_stream: str, capfd: pytest.CaptureFixture[str]
) -> None:
    async def test() -> str:
        async with opened(redis_server.url, job_stream) as queue:
            job_id = await queue.submit(new_job())
            [delivery] = await taken(queue)
            await queue.complete([(delivery, Done(b"{}", "1"))])
            sender = BrokenSender(policy(1))
            dispatch = CallbackDispatch(queue, None, AccessLog(io.BytesIO()), sender=sender)
            dispatch.send(delivery, "done", "1", response=b"{}")
            await dispatch.stop(10)
            status = await queue.status(job_id)
            detail = "gave up after 0 attempt(s): internal error (RuntimeError)"
            assert status is not None and status.callback == CallbackRecord(HOOK, "failed", 0, detail)
            return job_id

    job_id = run(test())
    [failure] = logged_events(capfd.readouterr().err, "job_callback_failed")
    assert failure["job_id"] == job_id and "a bug in the sender" in json.dumps(failure), failure


def test_a_worker_whose_callbacks_are_at_the_bound_takes_no_more_jobs(
    tmp_path: Path, redis_server: RedisServer, job_stream: str
) -> None:
    """Backpressure: a take ends only once its callbacks fit, so a receiver that hangs holds the worker."""
    save_model(doubler_graph(), tmp_path / "doubler" / "1" / "model.onnx")
    write_config(tmp_path / "doubler", "max_batch_size: 8\n")
    settings = Settings(
        model_repository=tmp_path, async_redis_url=redis_server.url, async_stream=job_stream,
        async_worker=True, async_batch=1,
    )  # fmt: skip
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})

    async def test() -> None:
        dataplane = DataPlane(Repository.load(tmp_path, intra_op_threads=1), Metrics())
        await dataplane.start()
        log = AccessLog(io.BytesIO())
        async with Receiver(Answer(hang=True)) as receiver, opened(redis_server.url, job_stream) as queue:
            hook = f"http://127.0.0.1:{receiver.port}/"
            jobs = [
                await queue.submit(NewJob("doubler", "1", None, body.encode(), None, None, f"r{n}", hook))
                for n in range(3)
            ]
            dispatch = CallbackDispatch(queue, policy(receiver.port), log, max_pending=1)
            worker = JobWorker(
                queue, dataplane, RequestTracker(dataplane.metrics, log), log, settings, dispatch
            )
            worker.start()
            try:
                await wait_until_async(lambda: len(receiver.requests) == 2, 10, "two callbacks were not sent")
                # Two takes of one job (the worker's capacity), each waiting for room for its callback.
                assert (worker.held, dispatch.pending) == (2, 2), (worker.held, dispatch.pending)
                third = await queue.status(jobs[2])
                assert third is not None and third.state == "pending", "the third job must wait in the queue"
                receiver.release()
                await wait_until_async(lambda: len(receiver.requests) == 3, 10, "the third job's callback")
                states = [
                    status.state for status in [await queue.status(job_id) for job_id in jobs] if status
                ]
                assert states == ["done"] * 3, states
            finally:
                await worker.stop(5)
                await dataplane.stop()

    run(test())


def test_a_server_started_with_an_unusable_callback_key_exits_2_before_loading_models(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """``serve`` builds the policy once at start-up (``load_settings`` refuses it earlier, for the CLI)."""
    key = tmp_path / "callback.key"
    key.write_bytes(b"short")
    settings = Settings(
        model_repository=tmp_path / "no-models", async_callback_hosts="hooks.example.com",
        async_callback_secret_file=key,
    )  # fmt: skip
    assert asyncio.run(serve(settings)) == 2, "an unusable key stops the server"
    [line] = logged_events(capfd.readouterr().err, "startup_failed")
    assert line["reason"] == f"callbacks: the callback key file {key} holds 5 bytes; at least 32", line
