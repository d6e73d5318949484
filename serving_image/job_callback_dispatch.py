"""Completion callbacks of finished jobs, sent from the callbacks stream: at least once, nothing lost.

The script that stores a job's result or dead letter also queues its callback, in the same step, on
``{stream}:callbacks`` (a transactional outbox; serving_image/job_queue.py). ``CallbackDispatch``
consumes that stream in each worker process with the consumer group ``callbacks``: it reads up to
``max_pending`` entries at a time (first those another worker left past the visibility timeout, then
new ones), sends each job's final document (``status_document``, built from the job's record, so it is
what ``GET /v2/jobs/{id}`` reports) with ``CallbackSender`` (signed, retried, addresses checked), logs
the outcome (``job_callback``) and records it on the job in the script that acknowledges the entry.

While it holds entries (sending, or waiting between attempts) it resets their visibility timeout every
third of it, so a slow receiver's retries are not taken over by another worker. An entry held by a
worker that died stops being kept, and another worker claims it after the visibility timeout and sends
the callback again; receivers deduplicate by the document's ``id``. At shutdown the callbacks still
going at the deadline are left unacknowledged, for another worker, rather than given up.

A worker without callbacks configured (no allowed hosts, no key) does not read the stream: the
callbacks wait for a worker that can sign them.
"""

import asyncio
import contextlib
import time
from collections import Counter

import orjson

from serving_image.access_log import AccessLog, log_event
from serving_image.errors import QueueUnavailable
from serving_image.job_callbacks import CallbackOutcome, CallbackPolicy, CallbackSender, status_document
from serving_image.job_queue import CallbackEntry, JobQueue, JobStatus
from serving_image.repository import failure_fields

READ_BLOCK_MS = 500
"""How long one read waits for new callbacks: also how soon the dispatch notices it is asked to stop."""
MAX_CLAIM_INTERVAL_S = 5.0
MAX_BACKOFF_S = 5.0
MAX_PENDING_CALLBACKS = 1024
"""Callbacks a worker holds at once (sending, or waiting between attempts); the others wait in the
stream, where any worker may take them."""
MAX_CALLBACK_CONNECTIONS = 32
"""Callback POSTs open at once."""
RECORD_BATCH = 256
"""Outcomes recorded (and their entries acknowledged) in one round trip at most. Those that end while a
batch is being recorded wait for the next, so the callbacks held never take a connection each from the
pool they share with the jobs."""
CALLBACK_STOP_MARGIN_S = 0.5
"""At shutdown, the time kept back from the grace period for the callbacks cut off to end."""
LEFT_REASON = "the worker stopped before the callback was delivered; left for another worker"

Outcome = tuple[CallbackEntry, str, int, str]
"""A callback's end as recorded: its entry, status (delivered or failed), attempts and one line."""


class CallbackDispatch:
    """Consumes the callbacks stream for one worker until asked to stop.

    Each callback's outcome is logged (``job_callback``: job id, delivered or not, attempts, HTTP
    status, reason, and how many times its entry was delivered) and recorded on the job's hash
    (``callback_status`` delivered or failed, ``callback_attempts``, ``callback_detail``) in the step
    that acknowledges the entry.
    """

    def __init__(
        self, queue: JobQueue, policy: CallbackPolicy | None, access_log: AccessLog, *,
        sender: CallbackSender | None = None, max_pending: int = MAX_PENDING_CALLBACKS,
    ) -> None:  # fmt: skip
        self._queue = queue
        if sender is None and policy is not None:
            sender = CallbackSender(policy, max_concurrent=MAX_CALLBACK_CONNECTIONS)
        self._sender = sender
        self._log = access_log
        self._max_pending = max_pending
        visibility_s = queue.visibility_ms / 1000
        self._claim_every = min(visibility_s / 2, MAX_CLAIM_INTERVAL_S)
        self._keep_every = visibility_s / 3
        self.consumer = ""
        self._held: dict[str, asyncio.Task[None]] = {}
        self._unrecorded: list[tuple[Outcome, asyncio.Future[None]]] = []
        self._recorder: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._room = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self.counts: Counter[str] = Counter()

    @property
    def pending(self) -> int:
        """Callbacks held: being sent or waiting between attempts."""
        return len(self._held)

    def start(self, consumer: str) -> None:
        """Start reading the callbacks stream as ``consumer`` (nothing, without callbacks configured)."""
        self.consumer = consumer
        if self._sender is None:
            log_event("job_callbacks_not_dispatched", consumer=consumer,
                      reason="callbacks are not configured on this worker")  # fmt: skip
            return
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._read_loop()), loop.create_task(self._keep_loop())]

    def stop_taking(self) -> None:
        """Take no more callbacks (the reader ends within ``READ_BLOCK_MS``); those held go on."""
        self._stopping.set()
        self._room.set()

    async def stop(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for the callbacks held; leave the rest unacknowledged, for another
        worker to claim after the visibility timeout. How many were left."""
        self.stop_taking()
        deadline = time.monotonic() + timeout
        margin = min(CALLBACK_STOP_MARGIN_S, timeout / 2)
        if self._loops:
            await asyncio.wait(self._loops[:1], timeout=max(0.0, deadline - margin - time.monotonic()))
        unfinished: set[asyncio.Task[None]] = set()
        if self._held:
            remaining = max(0.0, deadline - margin - time.monotonic())
            _, unfinished = await asyncio.wait(set(self._held.values()), timeout=remaining)
            for task in unfinished:
                task.cancel()
            if unfinished:  # cut off mid-send: each logs that it was left
                await asyncio.wait(unfinished, timeout=margin)
        if self._recorder is not None:  # the outcomes that ended last are still being recorded
            await asyncio.wait([self._recorder], timeout=max(margin, deadline - time.monotonic()))
        for task in self._loops:
            task.cancel()
        return len(unfinished)

    async def _read_loop(self) -> None:
        cursor, claim_at, backoff, grouped = "0-0", 0.0, 0.1, False
        while not self._stopping.is_set():
            room = self._max_pending - len(self._held)
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                if not grouped:  # at start, and after an outage (the stream may have been lost with it)
                    await self._queue.ensure_group()
                    grouped = True
                entries, cursor, claim_at = await self._take(room, cursor, claim_at)
                entries = [entry for entry in entries if entry.entry_id not in self._held]
                jobs = await self._queue.statuses([entry.job_id for entry in entries])
            except Exception as error:  # an outage, or a bug: either way the dispatch must go on reading
                if isinstance(error, QueueUnavailable):
                    log_event("job_queue_unavailable", consumer=self.consumer, stream="callbacks",
                              error=str(error.__cause__ or error), retry_in_seconds=backoff)  # fmt: skip
                else:
                    log_event("job_callback_read_failed", consumer=self.consumer, **failure_fields(error))
                grouped = False
                await self._pause(backoff)
                backoff = min(2 * backoff, MAX_BACKOFF_S)
                continue
            backoff = 0.1
            for entry, job in zip(entries, jobs, strict=True):
                self._hold(entry, job)

    async def _take(self, want: int, cursor: str, claim_at: float) -> tuple[list[CallbackEntry], str, float]:
        """Callbacks left past the visibility timeout first, then new ones."""
        entries: list[CallbackEntry] = []
        now = time.monotonic()
        if now >= claim_at:
            entries, cursor = await self._queue.claim_callbacks(self.consumer, want, cursor)
            claim_at = now if entries or cursor != "0-0" else now + self._claim_every
            if entries:
                self.counts["claimed"] += len(entries)
        if len(entries) < want and not self._stopping.is_set():
            block = 0 if entries else READ_BLOCK_MS
            entries += await self._queue.read_callbacks(self.consumer, want - len(entries), block)
        return entries, cursor, claim_at

    def _hold(self, entry: CallbackEntry, job: JobStatus | None) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(entry, job))
        self._held[entry.entry_id] = task
        task.add_done_callback(lambda _: self._ended(entry.entry_id))

    def _ended(self, entry_id: str) -> None:
        self._held.pop(entry_id, None)
        if len(self._held) < self._max_pending:
            self._room.set()

    async def _keep_loop(self) -> None:
        """Reset the visibility timeout of the callbacks held, every third of it."""
        while True:
            await asyncio.sleep(self._keep_every)  # a timer, not a synchronisation
            try:
                await self._queue.keep_callbacks(self.consumer, list(self._held))
            except QueueUnavailable as error:  # the reader logs the outage; the next beat tries again
                log_event(
                    "job_callbacks_not_kept", consumer=self.consumer, error=str(error.__cause__ or error)
                )

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if asked to stop meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _deliver(self, entry: CallbackEntry, job: JobStatus | None) -> None:
        """Send the callback of ``job`` (its record as read when the entry was taken)."""
        attempts = 0

        def attempted(number: int) -> None:
            nonlocal attempts
            attempts = number

        try:  # only the sending is cut off at shutdown; an outcome is recorded once it is known
            if job is None or job.callback is None:
                outcome = CallbackOutcome(False, 0, None, "not sent: the job's record has expired")
            else:
                assert self._sender is not None, "the dispatch reads only with a sender"
                outcome = await self._sender.send(job.callback.url, final_document(job), attempted)
        except asyncio.CancelledError:  # stopped: the entry stays unacknowledged for another worker
            self.counts["left"] += 1
            self._event("job_callback_left", entry, {"attempts": attempts, "reason": LEFT_REASON})
            raise
        except Exception as error:  # a bug: logged with its traceback; the callback is given up
            log_event("job_callback_failed", job_id=entry.job_id, **failure_fields(error))
            outcome = CallbackOutcome(False, attempts, None, f"internal error ({type(error).__name__})")
        await self._ended_with(entry, outcome)

    async def _ended_with(self, entry: CallbackEntry, outcome: CallbackOutcome) -> None:
        """Log the outcome, then record it on the job and acknowledge the entry in one step (a Redis
        outage leaves the entry, and the callback is sent again)."""
        self.counts["delivered" if outcome.delivered else "gave_up"] += 1
        self._event("job_callback", entry, {
            "delivered": outcome.delivered, "attempts": outcome.attempts, "status": outcome.status,
            "reason": outcome.reason,
        })  # fmt: skip
        status = "delivered" if outcome.delivered else "failed"
        recorded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._unrecorded.append(((entry, status, outcome.attempts, outcome.summary()), recorded))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.get_running_loop().create_task(self._record())
        await recorded

    async def _record(self) -> None:
        """Record the outcomes that ended, a batch per round trip, until none is waiting."""
        while self._unrecorded:
            batch, self._unrecorded = self._unrecorded[:RECORD_BATCH], self._unrecorded[RECORD_BATCH:]
            try:
                await self._queue.callbacks_ended([outcome for outcome, _ in batch])
            except Exception as error:  # an outage (or a bug): the entries stay, and are sent again
                for (entry, *_), _ in batch:
                    log_event(
                        "job_callback_unrecorded", job_id=entry.job_id, error=str(error.__cause__ or error)
                    )
            for _, recorded in batch:
                if not recorded.done():  # its callback's task may have been cancelled meanwhile
                    recorded.set_result(None)

    def _event(self, event: str, entry: CallbackEntry, fields: dict[str, object]) -> None:
        self._log.write_event(event, {
            "job_id": entry.job_id, "model": entry.model, "version": entry.version, "caller": entry.caller,
            **fields, "deliveries": entry.deliveries,
        })  # fmt: skip


def final_document(job: JobStatus) -> bytes:
    """The document POSTed for a finished job: ``status_document`` of its record, naming the result in
    the object store by ``response_ref`` in place of ``response``, as ``GET /v2/jobs/{id}`` does."""
    if job.response_ref is None:
        return status_document(
            job.id, job.state, job.model, job.version, response=job.result, error=job.error
        )
    head = status_document(job.id, job.state, job.model, job.version, error=job.error)
    return head[:-1] + b',"response_ref":' + orjson.dumps(job.response_ref) + b"}"
