"""Asynchronous inference: jobs from the queue run through the same data plane as live requests.

A worker (``async_worker``) runs inside the server process, beside the transports. It takes up to
``async_batch`` jobs at a time from the consumer group (first those another worker left unfinished
past the visibility timeout, then new ones), runs them through the data plane, where the version's
batcher coalesces the jobs taken together into full batches, and records every result or failure
in one round trip. On SIGTERM it stops taking jobs and finishes those it holds; a job it cannot
finish in the grace period stays unacknowledged and is delivered again.

A job that named a callback URL has its callback queued on the callbacks stream by the step that
stores its result or dead letter; the worker's ``CallbackDispatch`` (serving_image/job_callback_dispatch.py)
consumes that stream beside the jobs, a bounded number at a time, each outcome logged (``job_callback``)
and recorded on the job for ``GET /v2/jobs/{id}``.

The version a job runs on was chosen when it was submitted, by the variant router with the caller's
headers as for a live request (``route_job``); it is recorded in the result. ``decode_job`` is the
one decoding of a job's body, used at submit to refuse a bad request with a 4xx and by the worker
to run it, so a job that was accepted never fails for its input.

A job may instead carry its request by reference (the request parameter ``input_ref``, an object in
the store ``async_object_store``; serving_image/object_store.py): only the reference can be checked
at submit (``check_input_ref``), so the worker reads the object (bounded by
``async_max_object_bytes``) and decodes it with ``decode_job``; an object that is missing, too large
or not a request the model takes fails the job at once with the reason, without further attempts
(another attempt would read the same object). A result larger than ``async_inline_result_bytes`` is
written to the store, and the job records its URL (``response_ref``) instead of the response.
"""

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Mapping, Sequence

from serving_image.access_log import AccessLog, log_event
from serving_image.auth import Gate
from serving_image.dataplane import DataPlane, Target
from serving_image.errors import (
    InvalidInput,
    JobNotFound,
    Overloaded,
    PayloadTooLarge,
    QueueUnavailable,
    ServingError,
)
from serving_image.job_callback_dispatch import CallbackDispatch
from serving_image.job_queue import (
    Completion,
    Dead,
    Delivery,
    Done,
    JobQueue,
    JobStatus,
    NewJob,
    Recorded,
    Retry,
)
from serving_image.object_store import ObjectMissing, ObjectStore, StoreUnavailable
from serving_image.repository import failure_fields
from serving_image.rest_codec import decode_infer_request, encode_infer_response
from serving_image.settings import Settings
from serving_image.tensors import InferRequest, InferResponse, TensorLimits
from serving_image.tracking import RequestTracker

PROTOCOL = "async"
"""The protocol label of a job's run in the metrics and the access log (whose request_id is the job id)."""
READ_BLOCK_MS = 500
"""How long one read waits for new jobs: also how soon a worker notices it is asked to stop."""
MAX_CLAIM_INTERVAL_S = 5.0
MAX_BACKOFF_S = 5.0
_UNKNOWN_JOB = "no job with this id: unknown, or finished and expired"
INPUT_REF_PARAMETER = "input_ref"
"""The V2 request parameter naming the object in the store that holds a job's request."""
REFS_NOT_CONFIGURED = "object-store references are not configured"


def route_job(dataplane: DataPlane, model: str, version: str | None, headers: Mapping[str, str]) -> Target:
    """The version that will run a job: the one asked for, or the variant router's choice.

    As ``DataPlane.route`` does for a live request, but never shed: a job waits in the queue,
    not in the version's batcher, so a full batcher does not refuse it.
    """
    return dataplane.assign(model, version, headers)


def decode_job(
    dataplane: DataPlane, target: Target, body: bytes, header_length: int | None, limits: TensorLimits
) -> InferRequest:
    """A job's request, decoded and checked as the data plane checks it before a run.

    A result is stored as JSON, so binary outputs asked for come back as JSON data.
    """
    specs = dataplane.input_specs(target)  # ModelNotReady (400) if the version did not load
    request = decode_infer_request(
        target.model.name, target.version.version, body, header_length, specs, limits
    )
    dataplane.check(target, request)
    request.binary_outputs = False
    for output in request.outputs or ():
        output.binary = False
    return request


def check_input_ref(store: ObjectStore | None, value: object) -> str:
    """A job's ``input_ref`` as checked at submit: a string naming an object under the store's
    ``inputs/``; ``InvalidInput`` (400) naming the problem. Whether the object exists, its size and its
    content are the worker's to check."""
    if store is None:
        raise InvalidInput(REFS_NOT_CONFIGURED)
    if not isinstance(value, str):
        raise InvalidInput(f"request parameter '{INPUT_REF_PARAMETER}' must be a string (a URL)")
    store.input_key(value)
    return value


async def caller_job(
    queue: JobQueue, gate: Gate, headers: Mapping[str, str], job_id: str, model: str | None = None
) -> JobStatus:
    """The job, for the caller that submitted it (``GET /v2/jobs/{id}``, ``GET /v2/models/{m}/jobs/{id}``
    and ``GetJob``).

    With auth on, the token must hold the model's ``infer`` scope and name the submitter; else the
    trusted proxy's caller header must. Another caller's job is ``JobNotFound``, like an unknown one;
    so is a job of another model than the path names (the gateway authorizes by the path's model).
    """
    job = await queue.status(job_id)
    if job is None or (model is not None and job.model != model):
        raise JobNotFound(_UNKNOWN_JOB)
    if gate.enabled:
        caller: str | None = (await gate.authorize(headers, job.model, "infer")).subject
    else:
        caller = gate.caller(headers)
    if job.caller is not None and caller != job.caller:  # another caller's job is not revealed
        raise JobNotFound(_UNKNOWN_JOB)
    return job


def log_submitted(log: AccessLog | None, job_id: str, job: NewJob) -> None:
    """The ``job_submitted`` access-log line."""
    if log is not None:
        log.write_event("job_submitted", {
            "job_id": job_id, "request_id": job.request_id, "model": job.model, "version": job.version,
            "version_requested": job.version_requested, "caller": job.caller,
            "callback": job.callback_url is not None,
        })  # fmt: skip


def consumer_name() -> str:
    """This process's name in the consumer group: unique per start, and says where it ran."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class JobWorker:
    """Consumes the job queue in the server process until asked to stop."""

    def __init__(
        self, queue: JobQueue, dataplane: DataPlane, tracker: RequestTracker, access_log: AccessLog,
        settings: Settings, callbacks: CallbackDispatch | None = None,
    ) -> None:  # fmt: skip
        self._queue = queue
        self.callbacks = callbacks or CallbackDispatch(queue, None, access_log)
        self._dp = dataplane
        self._tracker = tracker
        self._log = access_log
        self._batch = settings.async_batch
        # Two takes in flight: the next one is read while the last one computes.
        self._capacity = 2 * settings.async_batch
        self._max_attempts = settings.async_max_attempts
        self._visibility_s = settings.async_visibility_timeout_s
        self._claim_every = min(settings.async_visibility_timeout_s / 2, MAX_CLAIM_INTERVAL_S)
        self._limits = TensorLimits(settings.max_tensor_rank, settings.max_tensor_elements)
        self._store = queue.store
        self._inline_bytes = settings.async_inline_result_bytes
        self._max_object_bytes = settings.async_max_object_bytes
        self.consumer = consumer_name()
        self.counts: Counter[str] = Counter()
        self._stopping = asyncio.Event()
        self._room = asyncio.Event()
        self._inflight = 0
        self._takes: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None

    @property
    def held(self) -> int:
        """Jobs taken whose take has not ended."""
        return self._inflight

    def start(self) -> None:
        """Start taking jobs, and sending the callbacks of finished jobs."""
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())
        log_event("async_worker_started", consumer=self.consumer, stream=self._queue.stream,
                  batch=self._batch, max_attempts=self._max_attempts)  # fmt: skip
        self.callbacks.start(self.consumer)

    def stop_taking(self) -> None:
        """Take no more jobs nor callbacks (the readers end within ``READ_BLOCK_MS``); those held go on."""
        self._stopping.set()
        self._room.set()
        self.callbacks.stop_taking()

    async def stop(self, timeout: float) -> None:
        """Stop taking jobs and wait up to ``timeout`` s for those held; the rest are delivered again.

        The callbacks held get what is left of ``timeout``; those still going then are left
        unacknowledged in the callbacks stream, and another worker sends them.
        """
        self.stop_taking()
        deadline = time.monotonic() + timeout
        if self._reader is not None:
            await asyncio.wait([self._reader], timeout=max(0.0, deadline - time.monotonic()))
        abandoned = 0
        if self._takes:
            _, unfinished = await asyncio.wait(self._takes, timeout=max(0.0, deadline - time.monotonic()))
            for task in unfinished:
                task.cancel()
            abandoned = len(unfinished)
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
        abandoned_callbacks = await self.callbacks.stop(max(0.0, deadline - time.monotonic()))
        callback_counts = {f"callbacks_{name}": count for name, count in self.callbacks.counts.items()}
        log_event("async_worker_stopped", consumer=self.consumer, abandoned_takes=abandoned,
                  abandoned_callbacks=abandoned_callbacks, **self.counts, **callback_counts)  # fmt: skip

    async def _read_loop(self) -> None:
        cursor, claim_at, backoff, grouped = "0-0", 0.0, 0.1, False
        while not self._stopping.is_set():
            room = self._capacity - self._inflight
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                if not grouped:  # at start, and after an outage (the stream may have been lost with it)
                    await self._queue.ensure_group()
                    grouped = True
                deliveries, cursor, claim_at = await self._take(min(self._batch, room), cursor, claim_at)
            except Exception as error:  # an outage, or a bug: either way the worker must go on reading
                if isinstance(error, QueueUnavailable):
                    log_event("job_queue_unavailable", consumer=self.consumer,
                              error=str(error.__cause__ or error), retry_in_seconds=backoff)  # fmt: skip
                else:
                    log_event("job_read_failed", consumer=self.consumer, **failure_fields(error))
                grouped = False
                await self._pause(backoff)
                backoff = min(2 * backoff, MAX_BACKOFF_S)
                continue
            backoff = 0.1
            if deliveries:
                self._inflight += len(deliveries)
                task = asyncio.get_running_loop().create_task(self._run_take(deliveries))
                self._takes.add(task)
                task.add_done_callback(self._takes.discard)

    async def _take(self, want: int, cursor: str, claim_at: float) -> tuple[list[Delivery], str, float]:
        """Jobs left unfinished past the visibility timeout first, then new ones."""
        deliveries: list[Delivery] = []
        now = time.monotonic()
        if now >= claim_at:
            deliveries, cursor = await self._queue.claim(self.consumer, want, cursor)
            # Scan on at once while the pending entries yield jobs or have not all been looked at.
            claim_at = now if deliveries or cursor != "0-0" else now + self._claim_every
            self.counts["claimed"] += len(deliveries)
        if len(deliveries) < want and not self._stopping.is_set():
            block = 0 if deliveries else READ_BLOCK_MS
            deliveries += await self._queue.read(self.consumer, want - len(deliveries), block)
        return deliveries, cursor, claim_at

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if asked to stop meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _run_take(self, deliveries: Sequence[Delivery]) -> None:
        """Run the jobs taken together, concurrently so their version's batcher can batch them."""
        try:
            exhausted = [d for d in deliveries if d.attempts > self._max_attempts]
            fresh = [d for d in deliveries if d.attempts <= self._max_attempts]
            started = await self._queue.begin(fresh, self.consumer)
            runnable = [d for d, ok in zip(fresh, started, strict=True) if ok]
            for delivery, ok in zip(fresh, started, strict=True):
                if not ok:  # a result exists (or expired): acknowledged without computing again
                    self._event("job_skipped", delivery, reason="the job has finished already")
            outcomes = await self._run_together(runnable)
            completions: list[tuple[Delivery, Completion]] = [
                (delivery, self._exhausted()) for delivery in exhausted
            ]
            completions += zip(runnable, outcomes, strict=True)
            recorded = await self._queue.complete(completions)
            self._record(completions, recorded)
        except QueueUnavailable as error:  # nothing acknowledged: the jobs are delivered again
            log_event("job_queue_unavailable", consumer=self.consumer,
                      error=str(error.__cause__ or error), jobs=len(deliveries))  # fmt: skip
        except Exception as error:  # a bug: logged; the jobs, unacknowledged, are delivered again
            log_event("job_take_failed", consumer=self.consumer, jobs=len(deliveries),
                      **failure_fields(error))  # fmt: skip
        finally:
            self._inflight -= len(deliveries)
            self._room.set()

    async def _run_together(self, runnable: Sequence[Delivery]) -> list[Completion]:
        """Each job's outcome; a job that failed in the server (not for its input) is run again alone.

        The jobs run concurrently, so the batcher may stack them into one run, and a runtime failure
        then fails the whole batch: running the failed ones again one at a time keeps one poison job
        from failing (and, in the end, dead-lettering) the jobs that happened to share its batch.
        """
        runs = await asyncio.gather(*(self._run(delivery) for delivery in runnable))
        outcomes = [completion for completion, _ in runs]
        if len(runnable) > 1:
            for index, (_, server_failure) in enumerate(runs):
                if server_failure:
                    outcomes[index], _ = await self._run(runnable[index])
        return outcomes

    def _exhausted(self) -> Dead:
        return Dead(
            f"no run finished in {self._max_attempts} attempts (each worker stopped, or ran past the "
            f"visibility timeout of {self._visibility_s:g} s)",
            with_last_error=True,
        )

    async def _run(self, delivery: Delivery) -> tuple[Completion, bool]:
        """One job's run and one access-log line (protocol ``async``, the job's id as request id).

        Returns the outcome, and whether it is a failure of the server's (status 500 and up) that a
        batch-mate could have caused.
        """
        tracked = self._tracker.start(PROTOCOL, delivery.job_id, delivery.caller)
        tracked.model, tracked.version = delivery.model, delivery.version
        status: int = 500
        outcome, error_name = "server_error", "Cancelled"
        try:
            model = self._dp.model(delivery.model)  # 404 if this worker's repository lacks it
            target = Target(model, self._dp.version(model, delivery.version))
            if delivery.input_ref is None:
                request = decode_job(self._dp, target, delivery.body, delivery.header_length, self._limits)
            else:
                request = await self._referenced(delivery.input_ref, target)
            response = await self._infer(target, request)
            done = await self._done(delivery, response)
            status, outcome, error_name = 200, "success", ""
            return done, False
        except UnusableInput as error:  # the client's object: another attempt would read the same
            cause = error.cause
            status, outcome, error_name = cause.status, cause.outcome, type(cause).__name__
            return Dead(error.message), False
        except ServingError as error:
            status, outcome, error_name = error.status, error.outcome, type(error).__name__
            return self._failed(delivery, error.message), error.status >= 500
        except Exception as error:  # a bug: the job is retried, and the operator gets the traceback
            log_event("job_run_failed", job_id=delivery.job_id, model=delivery.model,
                      version=delivery.version, **failure_fields(error))  # fmt: skip
            error_name = "InternalError"
            return self._failed(delivery, f"internal server error ({type(error).__name__})"), True
        finally:
            self._tracker.finish(tracked, status, outcome, error_name or None)

    async def _referenced(self, input_ref: str, target: Target) -> InferRequest:
        """The request in the object ``input_ref`` names, read (size-checked first) and decoded as any
        job's body; ``UnusableInput`` if it is missing, too large or not a request the model takes."""
        if self._store is None:  # the operator's doing (submit checked the reference): retried
            raise StoreUnavailable(f"{REFS_NOT_CONFIGURED} on this worker")
        try:
            body = await self._store.get(self._store.input_key(input_ref), self._max_object_bytes)
        except (ObjectMissing, InvalidInput, PayloadTooLarge) as error:
            raise UnusableInput(error, f"{INPUT_REF_PARAMETER}: {error.message}") from error
        try:
            return decode_job(self._dp, target, body, None, self._limits)
        except (InvalidInput, PayloadTooLarge) as error:
            message = f"{INPUT_REF_PARAMETER} {input_ref}: {error.message}"
            raise UnusableInput(error, message) from error

    async def _done(self, delivery: Delivery, response: InferResponse) -> Done:
        """The run's result: inline, or written to the object store if it is larger than
        ``async_inline_result_bytes`` (and a store is configured)."""
        result, _ = encode_infer_response(response)
        if self._store is None or len(result) <= self._inline_bytes:
            return Done(result, response.version)
        url = await self._store.put(self._store.result_key(delivery.job_id), result)
        return Done(b"", response.version, response_ref=url)

    async def _infer(self, target: Target, request: InferRequest) -> InferResponse:
        """The data plane's answer; a batcher full of live traffic is waited out, up to half the visibility
        timeout (then the run fails and the job is retried later)."""
        deadline = time.monotonic() + self._visibility_s / 2
        delay = 0.005
        while True:
            try:
                return await self._dp.infer(target, request)
            except Overloaded:
                if time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)  # a back-off, not a synchronisation: the batcher has no signal
                delay = min(2 * delay, 0.5)

    def _failed(self, delivery: Delivery, message: str) -> Completion:
        if delivery.attempts >= self._max_attempts:
            return Dead(f"attempt {delivery.attempts} of {self._max_attempts} failed: {message}")
        return Retry(message)

    def _record(
        self, completions: Sequence[tuple[Delivery, Completion]], recorded: Sequence[Recorded]
    ) -> None:
        for (delivery, completion), outcome in zip(completions, recorded, strict=True):
            if isinstance(completion, Done):
                self.counts["done" if outcome.changed else "duplicate"] += 1
                if not outcome.changed:  # computed again after a redelivery; the first stored result stands
                    self._event("job_duplicate", delivery, reason="a result was stored already")
            elif isinstance(completion, Retry):
                self.counts["retried"] += 1
                self._event("job_retry", delivery, reason=completion.error)
            elif outcome.changed:
                reason = outcome.reason or completion.reason
                self.counts["dead_lettered"] += 1
                self._event("job_dead_lettered", delivery, reason=reason)

    def _event(self, event: str, delivery: Delivery, reason: str) -> None:
        self._log.write_event(event, {
            "job_id": delivery.job_id, "model": delivery.model, "version": delivery.version,
            "caller": delivery.caller, "attempts": delivery.attempts, "reason": reason,
        })  # fmt: skip


class UnusableInput(Exception):
    """A job's referenced input that no attempt could run: missing, too large, or not a request the
    model takes (``cause``). The job is dead-lettered at once with ``message``."""

    def __init__(self, cause: ServingError, message: str) -> None:
        super().__init__(message)
        self.cause = cause
        self.message = message
