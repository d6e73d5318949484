"""Completion callbacks in the worker, in-process, against a real redis-server and a real receiver.

What these prove that the server tests cannot isolate: a job's callback URL travels with its entry
and its record; the step that stores a result or a dead letter queues the callback on the callbacks
stream (the outbox) and marks it as being sent, once per stored result however often the job is
completed; the reason a dead letter records (with the last error) is the one a callback reports;
recording an outcome acknowledges the entry in the same step and never brings back an expired record;
a callback held past the visibility timeout is claimed by another consumer unless its holder keeps it;
the callbacks a worker holds are bounded, the rest wait in the stream, and jobs are not held back;
at shutdown the callbacks still going are left unacknowledged and another worker delivers them; a
Redis error while sending leaves the entry, and the callback is sent again.
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
from serving_image.errors import QueueUnavailable
from serving_image.job_callback_dispatch import LEFT_REASON, CallbackDispatch
from serving_image.job_callbacks import CallbackPolicy, CallbackSender, parse_allowed_hosts, verify_signature
from serving_image.job_queue import (
    CALLBACK_GROUP,
    CallbackRecord,
    Dead,
    Delivery,
    Done,
    JobQueue,
    NewJob,
    Recorded,
    Retry,
)
from serving_image.job_worker import JobWorker
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


def outbox(redis_server: RedisServer, stream: str) -> list[dict[str, str]]:
    """The entries of the callbacks stream, as text."""
    client: Any = redis_server.client()
    return [
        {key.decode(): value.decode() for key, value in fields.items()}
        for _, fields in client.xrange(f"{stream}:callbacks")
    ]


def held(redis_server: RedisServer, stream: str) -> list[tuple[str, int]]:
    """(consumer, times delivered) of each callbacks entry read and not acknowledged."""
    client: Any = redis_server.client()
    pending = client.xpending_range(f"{stream}:callbacks", CALLBACK_GROUP, "-", "+", 100)
    return [(entry["consumer"].decode(), entry["times_delivered"]) for entry in pending]


async def finished_job(queue: JobQueue, hook: str | None = HOOK) -> tuple[str, Delivery]:
    """A job with a callback to ``hook``, taken and done: its callback is queued."""
    job_id = await queue.submit(new_job(hook))
    [delivery] = await taken(queue)
    assert await queue.complete([(delivery, Done(b'{"outputs":[]}', "1"))]) == [Recorded(True)]
    return job_id, delivery


# --- the queue ----------------------------------------------------------------------------------------------


def test_the_callback_url_travels_with_the_entry_and_the_record_and_the_result_queues_the_callback(
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
            assert outbox(redis_server, job_stream) == [], "nothing to send before a job finishes"
            assert await queue.complete([(first, Done(b"{}", "1")), (plain, Done(b"{}", "1"))]) == [
                Recorded(True), Recorded(True),
            ]  # fmt: skip
            done = await queue.status(job_id)
            assert done is not None and done.callback == CallbackRecord(HOOK, "sending", None, None), (
                "the step that stores the result marks the callback as being sent"
            )
            plain_done = await queue.status(plain_id)
            assert plain_done is not None and plain_done.callback is None, "no callback to send"
            assert outbox(redis_server, job_stream) == [
                {"id": job_id, "model": "doubler", "version": "1", "caller": "alice"}
            ], "the step that stores the result queues the job's callback, and only that job's"

    run(test())


def test_a_result_stored_twice_queues_one_callback(redis_server: RedisServer, job_stream: str) -> None:
    async def test() -> None:
        async with opened(redis_server.url, job_stream, async_visibility_timeout_s=0.05) as queue:
            job_id, _ = await finished_job(queue)
            # The same job computed again (redelivered after its result was stored): nothing more queued.
            await queue.submit(new_job())  # another job keeps the stream's read position honest
            second = await queue.read("c2", 1, 1000)
            again = Delivery(second[0].entry_id, job_id, "doubler", "1", b"{}", None, "alice", 2, HOOK)
            assert await queue.complete([(again, Done(b"{}", "1"))]) == [Recorded(False)]
            assert await queue.complete([(again, Dead("late"))]) == [Recorded(False)]
            ids = [entry["id"] for entry in outbox(redis_server, job_stream)]
            assert ids == [job_id], f"one callback for the job, whoever completed it again: {ids}"

    run(test())


def test_a_dead_letter_reports_the_reason_it_recorded_keeps_the_callback_url_and_queues_one_callback(
    redis_server: RedisServer, job_stream: str
) -> None:
    async def test() -> None:
        async with opened(redis_server.url, job_stream) as queue:
            job_id = await queue.submit(new_job())
            [delivery] = await taken(queue)
            assert await queue.complete([(delivery, Retry("model 'doubler' exploded"))]) == [Recorded(True)]
            assert outbox(redis_server, job_stream) == [], "a retry queues no callback"
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
            assert outbox(redis_server, job_stream) == [
                {"id": job_id, "model": "doubler", "version": "1", "caller": "alice"}
            ], "the dead letter queues one callback"

    run(test())


def test_a_callback_outcome_is_recorded_with_its_acknowledgement_without_reviving_a_record(
    redis_server: RedisServer, job_stream: str
) -> None:
    async def test() -> None:
        async with opened(redis_server.url, job_stream, async_result_ttl_s=600) as queue:
            job_id, _ = await finished_job(queue)
            gone_id, _ = await finished_job(queue)
            first, gone = await queue.read_callbacks("c1", 2, 1000)
            assert (first.job_id, first.deliveries, gone.job_id) == (job_id, 1, gone_id), (first, gone)
            detail = "delivered on attempt 2 (HTTP 204)"
            assert await queue.callback_ended(first, "delivered", 2, detail), "the record exists"
            status = await queue.status(job_id)
            assert status is not None and status.callback == CallbackRecord(HOOK, "delivered", 2, detail)
            ttl = redis_server.client().pttl(f"job:{job_id}")
            assert 0 < ttl <= 600_000, f"the record keeps its expiry: {ttl}"
            redis_server.client().delete(f"job:{gone_id}")  # as if it expired
            assert not await queue.callback_ended(gone, "delivered", 1, detail), "nothing to record on"
            assert not redis_server.client().exists(f"job:{gone_id}"), "an expired record must not come back"
            assert (outbox(redis_server, job_stream), held(redis_server, job_stream)) == ([], []), (
                "both entries acknowledged and deleted"
            )

    run(test())


def test_a_callback_held_past_the_visibility_timeout_is_claimed_unless_its_holder_keeps_it(
    redis_server: RedisServer, job_stream: str
) -> None:
    async def test() -> None:
        async with opened(redis_server.url, job_stream, async_visibility_timeout_s=0.2) as queue:
            for _ in range(2):
                await finished_job(queue)
            kept, left = await queue.read_callbacks("c1", 2, 1000)
            assert await queue.claim_callbacks("c2", 10, "0-0") == ([], "0-0"), "nothing claimed before"
            started = time.monotonic()
            await wait_until_async(lambda: time.monotonic() - started > 0.25, 5, "the timeout passed")
            assert await queue.keep_callbacks("c1", [kept.entry_id]) == 1, "c1 still held it"
            claimed, _ = await queue.claim_callbacks("c2", 10, "0-0")
            assert [(c.entry_id, c.deliveries) for c in claimed] == [(left.entry_id, 2)], claimed
            assert await queue.keep_callbacks("c1", [kept.entry_id, left.entry_id]) == 1, (
                "an entry another consumer claimed is not taken back"
            )
            assert sorted(held(redis_server, job_stream)) == [("c1", 1), ("c2", 2)], "kept without counting"

    run(test())


# --- the dispatch -------------------------------------------------------------------------------------------


async def dispatched(dispatch: CallbackDispatch, count: int, timeout: float = 10) -> None:
    """Wait until ``count`` callbacks ended (delivered or given up)."""

    def ended() -> bool:
        return dispatch.counts["delivered"] + dispatch.counts["gave_up"] >= count

    await wait_until_async(ended, timeout, lambda: f"callbacks ended: {dict(dispatch.counts)}")


def test_a_callback_is_signed_logged_recorded_and_acknowledged(
    redis_server: RedisServer, job_stream: str
) -> None:
    log = io.BytesIO()

    async def test() -> Receiver:
        async with (
            Receiver(Answer(503), Answer(204)) as receiver,
            opened(redis_server.url, job_stream) as queue,
        ):
            hook = f"http://127.0.0.1:{receiver.port}/done"
            job_id, _ = await finished_job(queue, hook)
            dispatch = CallbackDispatch(queue, policy(receiver.port, max_attempts=3), AccessLog(log))
            dispatch.start("c1")
            await dispatched(dispatch, 1)
            assert await dispatch.stop(10) == 0, "nothing left"
            status = await queue.status(job_id)
            detail = "delivered on attempt 2 (HTTP 204)"
            assert status is not None and status.callback == CallbackRecord(hook, "delivered", 2, detail)
            assert dict(dispatch.counts) == {"delivered": 1}, dispatch.counts
            [line] = events(log, "job_callback")
            keys = ("job_id", "model", "version", "caller", "delivered", "attempts", "status", "reason")
            assert {key: line[key] for key in (*keys, "deliveries")} == {
                "job_id": job_id, "model": "doubler", "version": "1", "caller": "alice", "delivered": True,
                "attempts": 2, "status": 204, "reason": "HTTP 204", "deliveries": 1,
            }, line  # fmt: skip
            assert (outbox(redis_server, job_stream), held(redis_server, job_stream)) == ([], []), (
                "the entry is acknowledged and deleted once the outcome is recorded"
            )
            return receiver

    receiver = run(test())
    assert len(receiver.requests) == 2, "a 503 then a 204: two attempts"
    for request in receiver.requests:
        document = json.loads(request.body)
        assert document["status"] == "done" and document["response"] == {"outputs": []}, document
        timestamp, signature = request.headers["x-signature-timestamp"], request.headers["x-signature"]
        assert verify_signature(KEY, request.body, timestamp, signature, time.time()), "signed with the key"


def test_a_dead_lettered_jobs_callback_carries_the_reason_recorded(
    redis_server: RedisServer, job_stream: str
) -> None:
    async def test() -> Receiver:
        async with Receiver(Answer(204)) as receiver, opened(redis_server.url, job_stream) as queue:
            job_id = await queue.submit(new_job(f"http://127.0.0.1:{receiver.port}/"))
            [delivery] = await taken(queue)
            await queue.complete([(delivery, Retry("boom"))])
            await queue.complete([(delivery, Dead("gave up", with_last_error=True))])
            dispatch = CallbackDispatch(queue, policy(receiver.port), AccessLog(io.BytesIO()))
            dispatch.start("c1")
            await dispatched(dispatch, 1)
            await dispatch.stop(10)
            assert json.loads(receiver.requests[0].body) == {
                "id": job_id, "status": "failed", "model": "doubler", "version": None,
                "error": "gave up; last error: boom",
            }, receiver.requests[0].body  # fmt: skip
            return receiver

    assert len(run(test()).requests) == 1, "one POST"


def test_the_callbacks_held_are_bounded_the_rest_wait_in_the_stream(
    redis_server: RedisServer, job_stream: str
) -> None:
    async def test() -> None:
        async with Receiver(Answer(hang=True)) as receiver, opened(redis_server.url, job_stream) as queue:
            hook = f"http://127.0.0.1:{receiver.port}/"
            for _ in range(3):
                await finished_job(queue, hook)
            dispatch = CallbackDispatch(queue, policy(receiver.port), AccessLog(io.BytesIO()), max_pending=2)
            dispatch.start("c1")
            await wait_until_async(lambda: len(receiver.requests) == 2, 10, "two callbacks are being sent")
            assert dispatch.pending == 2, dispatch.pending
            assert [consumer for consumer, _ in held(redis_server, job_stream)] == ["c1", "c1"], (
                "two of three read: the third waits in the stream"
            )
            receiver.release()  # the receiver closes both connections unanswered: the callbacks end
            await dispatched(dispatch, 3)
            assert dict(dispatch.counts) == {"gave_up": 3}, dispatch.counts
            assert len(receiver.requests) == 3, "the third was read once there was room"
            await dispatch.stop(10)

    run(test())


def test_at_shutdown_a_callback_still_going_is_left_for_another_worker_which_delivers_it(
    redis_server: RedisServer, job_stream: str
) -> None:
    log = io.BytesIO()

    async def test() -> Receiver:
        async with (
            Receiver(Answer(hang=True), Answer(204)) as receiver,
            opened(redis_server.url, job_stream, async_visibility_timeout_s=0.3) as queue,
        ):
            hook = f"http://127.0.0.1:{receiver.port}/"
            job_id, _ = await finished_job(queue, hook)
            first = CallbackDispatch(queue, policy(receiver.port, timeout_s=60), AccessLog(log))
            first.start("c1")
            await wait_until_async(lambda: len(receiver.requests) == 1, 10, "the callback was not sent")
            started = time.monotonic()
            left = await first.stop(1.0)
            elapsed = time.monotonic() - started
            assert left == 1 and elapsed < 5, f"1 s given, 60 s timeout: {left} left after {elapsed:.2f} s"
            status = await queue.status(job_id)
            assert status is not None and status.callback == CallbackRecord(hook, "sending", None, None), (
                "a callback left at shutdown is not recorded as given up"
            )
            assert held(redis_server, job_stream) == [("c1", 1)], "left unacknowledged, in c1's hands"
            assert events(log, "job_callback") == [], "no outcome: it has none yet"
            [line] = events(log, "job_callback_left")
            assert (line["job_id"], line["attempts"], line["reason"]) == (job_id, 1, LEFT_REASON), line

            second = CallbackDispatch(queue, policy(receiver.port), AccessLog(log))
            second.start("c2")
            await dispatched(second, 1)
            await second.stop(10)
            status = await queue.status(job_id)
            detail = "delivered on attempt 1 (HTTP 204)"
            assert status is not None and status.callback == CallbackRecord(hook, "delivered", 1, detail)
            [delivered] = events(log, "job_callback")
            assert (delivered["delivered"], delivered["deliveries"]) == (True, 2), delivered
            assert second.counts["claimed"] == 1, second.counts
            assert (outbox(redis_server, job_stream), held(redis_server, job_stream)) == ([], [])
            return receiver

    receiver = run(test())
    assert [json.loads(request.body)["id"] for request in receiver.requests] == [
        json.loads(receiver.requests[0].body)["id"]
    ] * 2, "the same document, sent again by the second worker"


def test_a_callback_being_sent_past_the_visibility_timeout_is_kept_from_other_workers(
    redis_server: RedisServer, job_stream: str
) -> None:
    async def test() -> None:
        async with (
            Receiver(Answer(hang=True)) as receiver,
            opened(redis_server.url, job_stream, async_visibility_timeout_s=0.3) as queue,
        ):
            await finished_job(queue, f"http://127.0.0.1:{receiver.port}/")
            holder = CallbackDispatch(queue, policy(receiver.port, timeout_s=60), AccessLog(io.BytesIO()))
            other = CallbackDispatch(queue, policy(receiver.port, timeout_s=60), AccessLog(io.BytesIO()))
            holder.start("c1")
            await wait_until_async(lambda: len(receiver.requests) == 1, 10, "the callback was not sent")
            other.start("c2")
            started = time.monotonic()
            await wait_until_async(lambda: time.monotonic() - started > 1.5, 5, "five visibility timeouts")
            assert len(receiver.requests) == 1, "nobody else sent it while its holder was sending"
            assert held(redis_server, job_stream) == [("c1", 1)], "still c1's, delivered once"
            assert other.counts["claimed"] == 0, other.counts
            receiver.release()
            await dispatched(holder, 1)
            await holder.stop(10)
            await other.stop(10)

    run(test())


def test_a_callback_its_holder_could_not_keep_is_claimed_back_but_sent_once(
    redis_server: RedisServer, job_stream: str, capfd: pytest.CaptureFixture[str]
) -> None:
    async def test() -> Receiver:
        async with (
            Receiver(Answer(hang=True)) as receiver,
            opened(redis_server.url, job_stream, async_visibility_timeout_s=0.2) as queue,
        ):
            await finished_job(queue, f"http://127.0.0.1:{receiver.port}/")

            async def unreachable(*_: object) -> int:
                raise QueueUnavailable("the job queue is unavailable (ConnectionError); retry later")

            setattr(queue, "keep_callbacks", unreachable)  # noqa: B010 (mypy refuses assigning a method)
            dispatch = CallbackDispatch(queue, policy(receiver.port, timeout_s=60), AccessLog(io.BytesIO()))
            dispatch.start("c1")
            await wait_until_async(lambda: dispatch.counts["claimed"] >= 2, 10, "not claimed back")
            assert len(receiver.requests) == 1, "a callback claimed back by its own holder is not sent twice"
            assert dispatch.pending == 1, dispatch.pending
            receiver.release()
            await dispatched(dispatch, 1)
            await dispatch.stop(10)
            return receiver

    assert len(run(test()).requests) == 1, "one POST"
    assert logged_events(capfd.readouterr().err, "job_callbacks_not_kept"), "the failed keep is logged"


class FlakyQueue:
    """Makes one of a queue's methods raise ``QueueUnavailable`` the first time it is called with
    something to do (a first argument that is not empty)."""

    def __init__(self, queue: JobQueue, method: str) -> None:
        self.calls = 0
        real = getattr(queue, method)

        async def flaky(*args: Any) -> Any:
            self.calls += 1 if args[0] else 0
            if self.calls == 1 and args[0]:
                raise QueueUnavailable("the job queue is unavailable (ConnectionError); retry later")
            return await real(*args)

        setattr(queue, method, flaky)


@pytest.mark.parametrize(
    ("method", "posts", "logged"),
    [("statuses", 1, "job_queue_unavailable"), ("callbacks_ended", 2, "job_callback_unrecorded")],
)
def test_a_redis_error_while_sending_leaves_the_entry_and_the_callback_is_sent_again(
    redis_server: RedisServer, job_stream: str, method: str, posts: int, logged: str,
    capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    async def test() -> Receiver:
        async with (
            Receiver(Answer(204)) as receiver,
            opened(redis_server.url, job_stream, async_visibility_timeout_s=0.2) as queue,
        ):
            job_id, _ = await finished_job(queue, f"http://127.0.0.1:{receiver.port}/")
            flaky = FlakyQueue(queue, method)
            dispatch = CallbackDispatch(queue, policy(receiver.port), AccessLog(io.BytesIO()))
            dispatch.start("c1")
            await wait_until_async(lambda: flaky.calls == 2, 10, "the callback was not taken again")
            await wait_until_async(lambda: not held(redis_server, job_stream), 10, "not acknowledged")
            await dispatch.stop(10)
            status = await queue.status(job_id)
            assert status is not None and status.callback is not None, status
            assert status.callback.status == "delivered", status.callback
            assert dispatch.counts["claimed"] == 1, "claimed again after the visibility timeout"
            return receiver

    assert len(run(test()).requests) == posts, "sent again when the outcome could not be recorded"
    assert logged_events(capfd.readouterr().err, logged), f"no {logged} line"


def test_a_worker_without_callbacks_configured_leaves_them_in_the_stream(
    redis_server: RedisServer, job_stream: str, capfd: pytest.CaptureFixture[str]
) -> None:
    async def test() -> None:
        async with opened(redis_server.url, job_stream) as queue:
            await finished_job(queue)
            dispatch = CallbackDispatch(queue, None, AccessLog(io.BytesIO()))
            dispatch.start("c1")
            assert await dispatch.stop(10) == 0, "nothing held"
            assert len(outbox(redis_server, job_stream)) == 1 and held(redis_server, job_stream) == [], (
                "the callback waits, unread, for a worker that can sign it"
            )

    run(test())
    [line] = logged_events(capfd.readouterr().err, "job_callbacks_not_dispatched")
    assert line["reason"] == "callbacks are not configured on this worker", line


class BrokenSender(CallbackSender):
    """A sender with a bug: the dispatch must log it and record the callback as given up."""

    async def send(self, url: str, document: bytes, on_attempt: Callable[[int], None] | None = None) -> Any:
        raise RuntimeError("a bug in the sender")


def test_a_bug_in_sending_is_logged_with_its_trace_and_the_callback_recorded_as_given_up(
    redis_server: RedisServer, job_stream: str, capfd: pytest.CaptureFixture[str]
) -> None:
    async def test() -> str:
        async with opened(redis_server.url, job_stream) as queue:
            job_id, _ = await finished_job(queue)
            dispatch = CallbackDispatch(queue, None, AccessLog(io.BytesIO()), sender=BrokenSender(policy(1)))
            dispatch.start("c1")
            await dispatched(dispatch, 1)
            await dispatch.stop(10)
            status = await queue.status(job_id)
            detail = "gave up after 0 attempt(s): internal error (RuntimeError)"
            assert status is not None and status.callback == CallbackRecord(HOOK, "failed", 0, detail)
            assert outbox(redis_server, job_stream) == [], "given up: acknowledged"
            return job_id

    job_id = run(test())
    [failure] = logged_events(capfd.readouterr().err, "job_callback_failed")
    assert failure["job_id"] == job_id and "a bug in the sender" in json.dumps(failure), failure


def test_a_callback_whose_job_record_expired_is_acknowledged_without_sending(
    redis_server: RedisServer, job_stream: str
) -> None:
    log = io.BytesIO()

    async def test() -> None:
        async with opened(redis_server.url, job_stream) as queue:
            job_id, _ = await finished_job(queue)
            redis_server.client().delete(f"job:{job_id}")  # as if it expired
            sender = BrokenSender(policy(1))  # never called
            dispatch = CallbackDispatch(queue, None, AccessLog(log), sender=sender)
            dispatch.start("c1")
            await dispatched(dispatch, 1)
            await dispatch.stop(10)
            [line] = events(log, "job_callback")
            assert (line["delivered"], line["attempts"], line["reason"]) == (
                False, 0, "not sent: the job's record has expired",
            ), line  # fmt: skip
            assert outbox(redis_server, job_stream) == [], "acknowledged"
            assert not redis_server.client().exists(f"job:{job_id}"), "the record is not revived"

    run(test())


def test_a_receiver_that_hangs_does_not_hold_the_jobs_back(
    tmp_path: Path, redis_server: RedisServer, job_stream: str
) -> None:
    """The results are stored and acknowledged whatever the receiver does; its callbacks wait in Redis."""
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
                await wait_until_async(lambda: len(receiver.requests) == 1, 10, "a callback was not sent")
                await wait_until_async(lambda: len(outbox(redis_server, job_stream)) == 3, 10, "all queued")
                states = [
                    status.state for status in [await queue.status(job_id) for job_id in jobs] if status
                ]
                assert states == ["done"] * 3, states
                assert (worker.held, dispatch.pending) == (0, 1), (worker.held, dispatch.pending)
                receiver.release()
                await wait_until_async(lambda: len(receiver.requests) == 3, 10, "the other callbacks")
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
