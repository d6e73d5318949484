"""The asynchronous inference queue: jobs on a Redis Stream, consumed by a consumer group.

The layout in Redis (docs/async-inference.md says why Redis Streams):

- ``{stream}``: one entry per job waiting or running (its id, model, version, caller and
  request body). An entry is deleted when its job finishes, so ``XLEN`` is the backlog that
  the bound checks and the autoscaler reads.
- the consumer group ``workers``: at-least-once delivery. An entry a worker read but never
  acknowledged is claimed by another after the visibility timeout (``XAUTOCLAIM``); each
  delivery counts, and the count is the job's attempts.
- ``{stream}:dead``: the dead-letter stream, one entry per job that used up its attempts, with
  the reason and the request body (so an operator can replay it).
- ``{stream}:callbacks``: the callbacks to send (a transactional outbox), one entry per finished job
  that named a callback URL, added by the same script that stores the job's result or dead letter, and
  consumed by the group ``callbacks`` (``job_callback_dispatch``). An entry is acknowledged and deleted
  in the script that records how its callback ended; one a worker held when it died is claimed by
  another after the visibility timeout, so a callback is sent at least once.
- ``job:{id}``: the job's hash: state (pending, running, done, failed), model, version requested
  and served, caller, request id, times, attempts, and the result (the V2 response JSON, or for a
  large one its URL in the object store, ``response_ref``) or the error; for a job with a completion
  callback, its URL and how its delivery went. It expires ``async_result_ttl_s`` after the job
  finished.

Each step that must not be torn in two is one Lua script, which Redis runs atomically: queue a
job within the bound and create its hash; start a run only if no result exists; store a result
and acknowledge the entry, storing nothing if a result exists already (so a redelivered job
stores one result, whoever computes it), queueing the job's callback with it; move a job to the
dead-letter stream, likewise; record how a finished job's callback went, without reviving an expired
record, and acknowledge its entry; keep the callbacks a worker is sending from being claimed.

``redis`` is imported only when a queue is configured (``JobQueue.connect``).
"""

import contextlib
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from serving_image.errors import Overloaded, QueueUnavailable
from serving_image.object_store import ObjectStore, open_store
from serving_image.settings import Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

GROUP = "workers"
CALLBACK_GROUP = "callbacks"
STATES = ("pending", "running", "done", "failed")
JOB_ID_LENGTH = 32  # uuid4 in hex

# KEYS: stream, job hash. ARGV: bound, the number of hash items n, n hash items, then the entry's items.
_SUBMIT = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
local split = 2 + tonumber(ARGV[2])
redis.call('HSET', KEYS[2], unpack(ARGV, 3, split))
redis.call('XADD', KEYS[1], '*', unpack(ARGV, split + 1))
return 1
"""

# KEYS: stream, job hash. ARGV: group, entry id, attempts, now, consumer.
# A job that is done or failed (or whose hash expired) is acknowledged, not run again.
_BEGIN = """
local state = redis.call('HGET', KEYS[2], 'state')
if state ~= 'pending' and state ~= 'running' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
  return 0
end
redis.call('HSET', KEYS[2], 'state', 'running', 'attempts', ARGV[3], 'started', ARGV[4], 'worker', ARGV[5])
return 1
"""

# KEYS: stream, job hash, callbacks stream. ARGV: group, entry id, result, version served, now, ttl in
# ms, the field the result goes in ('result', the V2 response, or 'response_ref', its URL in the object
# store), then the callbacks entry's items. Stores the result only if none is stored, and with it (for a
# job with a callback URL) the callback to send; acknowledges the entry either way.
_DONE = """
local state = redis.call('HGET', KEYS[2], 'state')
local stored = 0
if state == 'pending' or state == 'running' then
  redis.call('HSET', KEYS[2], 'state', 'done', ARGV[7], ARGV[3], 'version', ARGV[4], 'finished', ARGV[5])
  redis.call('HDEL', KEYS[2], 'error')
  if redis.call('HEXISTS', KEYS[2], 'callback_url') == 1 then
    redis.call('HSET', KEYS[2], 'callback_status', 'sending')
    redis.call('XADD', KEYS[3], '*', unpack(ARGV, 8))
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
  stored = 1
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return stored
"""

# KEYS: job hash. ARGV: the error. The entry stays unacknowledged: it is delivered again after the
# visibility timeout, like a message a queue's consumer did not delete.
_RETRY = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'pending', 'error', ARGV[1])
return 1
"""

# KEYS: stream, job hash, dead-letter stream, callbacks stream. ARGV: group, entry id, job id, reason, '1'
# to add the last error stored, attempts, now, ttl in ms, the callbacks entry's 8 items, then the entry's
# items to keep with the dead letter. Returns the reason as recorded (with the last error), or 0 if the
# job had finished already.
_DEAD = """
local state = redis.call('HGET', KEYS[2], 'state')
local moved = 0
if state == 'pending' or state == 'running' then
  local reason = ARGV[4]
  if ARGV[5] == '1' then
    reason = reason .. '; last error: ' .. (redis.call('HGET', KEYS[2], 'error') or 'none recorded')
  end
  redis.call('HSET', KEYS[2], 'state', 'failed', 'error', reason, 'attempts', ARGV[6], 'finished', ARGV[7])
  if redis.call('HEXISTS', KEYS[2], 'callback_url') == 1 then
    redis.call('HSET', KEYS[2], 'callback_status', 'sending')
    redis.call('XADD', KEYS[4], '*', unpack(ARGV, 9, 16))
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[8])
  redis.call('XADD', KEYS[3], '*', 'id', ARGV[3], 'reason', reason, 'attempts', ARGV[6], 'failed', ARGV[7],
             unpack(ARGV, 17))
  moved = reason
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return moved
"""

# KEYS: callbacks stream, job hash. ARGV: group, entry id, status, attempts, detail. Only an existing
# record is updated (HSET keeps its expiry): a callback that ends after its job's record expired must not
# bring back a record without one. The entry is acknowledged either way, in the same step, so a callback
# leaves the outbox only once its outcome is recorded.
_CALLBACK = """
local recorded = 0
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], 'callback_status', ARGV[3], 'callback_attempts', ARGV[4],
             'callback_detail', ARGV[5])
  recorded = 1
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return recorded
"""

# KEYS: callbacks stream. ARGV: group, consumer, then entry ids. Resets the idle time of each entry the
# consumer still holds (XCLAIM to itself, JUSTID: the delivery count is kept), so entries being sent or
# waiting between attempts are not claimed by another worker; one claimed by another already is left
# to it. Returns how many were kept.
_KEEP = """
local kept = 0
for index = 3, #ARGV do
  local held = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[index], ARGV[index], 1, ARGV[2])
  if #held > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[index], 'JUSTID')
    kept = kept + 1
  end
end
return kept
"""


@dataclass(frozen=True, slots=True)
class NewJob:
    """A checked request to queue: the version the variant router chose, and the body as sent."""

    model: str
    version: str
    version_requested: str | None
    body: bytes
    header_length: int | None
    caller: str | None
    request_id: str
    callback_url: str | None = None
    """Checked at submit (``job_callbacks.validate_callback_url``): POSTed the job's end."""
    input_ref: str | None = None
    """The object in the store holding the request (``object_store``); checked at submit to be inside
    the store, read and decoded by the worker."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One job handed to a worker, with the number of times it has been delivered (this one included)."""

    entry_id: str
    job_id: str
    model: str
    version: str
    body: bytes
    header_length: int | None
    caller: str | None
    attempts: int
    callback_url: str | None = None
    input_ref: str | None = None

    def fields(self) -> list[bytes | str]:
        """The entry's items, to keep with a dead letter."""
        items: list[bytes | str] = ["model", self.model, "version", self.version, "body", self.body]
        if self.header_length is not None:
            items += ["header_length", str(self.header_length)]
        if self.callback_url is not None:
            items += ["callback_url", self.callback_url]
        if self.input_ref is not None:
            items += ["input_ref", self.input_ref]
        return items

    def callback_items(self) -> list[str]:
        """The items of the job's callbacks entry (queued only if its record names a callback URL)."""
        return ["id", self.job_id, "model", self.model, "version", self.version, "caller", self.caller or ""]


@dataclass(frozen=True, slots=True)
class CallbackEntry:
    """One callback to send, handed to a worker: the finished job's id, model, version and caller, and
    how many times the entry has been delivered (this one included; more than 1 after a worker died)."""

    entry_id: str
    job_id: str
    model: str
    version: str
    caller: str | None
    deliveries: int


@dataclass(frozen=True, slots=True)
class CallbackRecord:
    """A job's completion callback: its URL, and ``pending`` (the job has not finished), ``sending``,
    ``delivered`` or ``failed``, with the attempts and a line saying how it went once it ended."""

    url: str
    status: str
    attempts: int | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class JobStatus:
    """What ``GET /v2/jobs/{id}`` reports: the job's hash, with the result as the stored JSON bytes."""

    id: str
    state: str
    model: str
    version: str | None
    version_requested: str | None
    caller: str | None
    attempts: int
    created: float
    started: float | None
    finished: float | None
    error: str | None
    result: bytes | None
    callback: CallbackRecord | None = None
    response_ref: str | None = None
    """Where the result is instead of ``result``: a URL in the object store (a large result)."""
    input_ref: str | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """A run that produced the V2 response ``result`` with ``version``; or, for a large result written
    to the object store, its URL ``response_ref`` (``result`` is then not stored)."""

    result: bytes
    version: str
    response_ref: str | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """A run that failed; the job is delivered again after the visibility timeout."""

    error: str


@dataclass(frozen=True, slots=True)
class Dead:
    """A job to move to the dead-letter stream, with the reason (and the last error a run stored)."""

    reason: str
    with_last_error: bool = False


Completion = Done | Retry | Dead


@dataclass(frozen=True, slots=True)
class Recorded:
    """What ``complete`` did with one completion: whether it changed the job's record, and for a job
    moved to the dead-letter stream the reason as recorded (with the last error, if asked)."""

    changed: bool
    reason: str | None = None


def iso_time(seconds: float | None) -> str | None:
    """A time of a job's record as ISO 8601 UTC with milliseconds (``2026-11-30T06:42:19.175Z``)."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def valid_job_id(job_id: str) -> bool:
    """Whether ``job_id`` has the form of the ids ``submit`` makes (so nothing else reaches Redis)."""
    return len(job_id) == JOB_ID_LENGTH and all(char in "0123456789abcdef" for char in job_id)


class JobQueue:
    """The jobs stream, its consumer group, the dead-letter stream and the job hashes in one Redis."""

    def __init__(self, client: "Redis", settings: Settings, errors: tuple[type[BaseException], ...]) -> None:
        self._redis = client
        self.stream = settings.async_stream
        self.dead_stream = f"{settings.async_stream}:dead"
        self.callback_stream = f"{settings.async_stream}:callbacks"
        self.max_queued = settings.async_max_queued
        self.visibility_ms = max(1, round(settings.async_visibility_timeout_s * 1000))
        self.ttl_ms = settings.async_result_ttl_s * 1000
        self._errors = errors
        # The store of the jobs' large inputs and results (serving_image/object_store.py); None when unset.
        self.store: ObjectStore | None = (
            open_store(settings.async_object_store) if settings.async_object_store else None
        )
        self._submit: AsyncScript = client.register_script(_SUBMIT)
        self._begin: AsyncScript = client.register_script(_BEGIN)
        self._done: AsyncScript = client.register_script(_DONE)
        self._retry: AsyncScript = client.register_script(_RETRY)
        self._dead: AsyncScript = client.register_script(_DEAD)
        self._callback: AsyncScript = client.register_script(_CALLBACK)
        self._keep: AsyncScript = client.register_script(_KEEP)

    @classmethod
    def connect(cls, settings: Settings) -> "JobQueue":
        """A queue on ``async_redis_url`` (connections are opened on first use)."""
        import redis
        from redis.asyncio import Redis

        client = Redis.from_url(
            settings.async_redis_url,
            protocol=2,
            socket_connect_timeout=5,
            # Above the worker's blocking read (READ_BLOCK_MS), so only a dead connection times out.
            socket_timeout=10,
            health_check_interval=30,
        )
        return cls(client, settings, (redis.RedisError, OSError))

    async def close(self) -> None:
        """Close the connections."""
        with contextlib.suppress(*self._errors):
            await self._redis.aclose()

    @contextlib.contextmanager
    def _reachable(self) -> Iterator[None]:
        """Redis's errors as one ``QueueUnavailable`` (503): nothing was queued, so a retry is safe."""
        try:
            yield
        except self._errors as error:
            name = type(error).__name__
            raise QueueUnavailable(f"the job queue is unavailable ({name}); retry later") from error

    async def ensure_group(self) -> None:
        """Create the jobs stream and the callbacks stream and their groups if missing, each read from the
        stream's start: no entry is skipped."""
        import redis

        with self._reachable():
            for stream, group in ((self.stream, GROUP), (self.callback_stream, CALLBACK_GROUP)):
                try:
                    await self._redis.xgroup_create(stream, group, id="0", mkstream=True)
                except redis.ResponseError as error:
                    if "BUSYGROUP" not in str(error):
                        raise

    async def submit(self, job: NewJob) -> str:
        """Queue a job and return its id; ``Overloaded`` (429) if ``max_queued`` jobs wait or run."""
        job_id = uuid.uuid4().hex
        now = _now()
        record = [
            "state", "pending", "model", job.model, "version_requested", job.version_requested or "",
            "caller", job.caller or "", "request_id", job.request_id, "created", now, "attempts", "0",
        ]  # fmt: skip
        entry: list[bytes | str] = [
            "id", job_id, "model", job.model, "version", job.version, "caller", job.caller or "",
            "body", job.body,
        ]  # fmt: skip
        if job.header_length is not None:
            entry += ["header_length", str(job.header_length)]
        if job.callback_url is not None:
            record += ["callback_url", job.callback_url]
            entry += ["callback_url", job.callback_url]
        if job.input_ref is not None:
            record += ["input_ref", job.input_ref]
            entry += ["input_ref", job.input_ref]
        with self._reachable():
            queued = await self._submit(
                keys=[self.stream, _job_key(job_id)], args=[self.max_queued, len(record), *record, *entry]
            )
        if not queued:
            limit = self.max_queued
            raise Overloaded(f"the job queue is full ({limit} jobs waiting or running); retry later")
        return job_id

    async def status(self, job_id: str) -> JobStatus | None:
        """The job's state and result, or None for an unknown or expired id."""
        if not valid_job_id(job_id):
            return None
        with self._reachable():
            raw = await self._redis.hgetall(_job_key(job_id))
        return _job_status(job_id, raw)

    async def statuses(self, job_ids: Sequence[str]) -> list[JobStatus | None]:
        """``status`` of each job, in one round trip."""
        if not job_ids:
            return []
        with self._reachable():
            async with self._redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.hgetall(_job_key(job_id))
                raws = await pipe.execute()
        return [_job_status(job_id, raw) for job_id, raw in zip(job_ids, raws, strict=True)]

    async def depth(self) -> int:
        """Jobs waiting or running."""
        with self._reachable():
            return await self._redis.xlen(self.stream)

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        """Up to ``count`` jobs never delivered before, waiting up to ``block_ms`` for the first."""
        entries = await self._read(self.stream, GROUP, consumer, count, block_ms)
        return [delivery for entry in entries if (delivery := _delivery(entry, 1)) is not None]

    async def claim(self, consumer: str, count: int, cursor: str) -> tuple[list[Delivery], str]:
        """Up to ``count`` jobs whose worker has not finished them within the visibility timeout.

        Scans the group's pending entries from ``cursor``; returns the jobs, now this consumer's, each
        with its delivery count, and the cursor to go on from ("0-0" once the scan has wrapped).
        """
        claimed, cursor = await self._claim(self.stream, GROUP, consumer, count, cursor)
        deliveries = [
            delivery for entry, times in claimed if (delivery := _delivery(entry, times)) is not None
        ]
        return deliveries, cursor

    async def read_callbacks(self, consumer: str, count: int, block_ms: int) -> list[CallbackEntry]:
        """Up to ``count`` callbacks never delivered before, waiting up to ``block_ms`` for the first."""
        entries = await self._read(self.callback_stream, CALLBACK_GROUP, consumer, count, block_ms)
        return [callback for entry in entries if (callback := _callback_entry(entry, 1)) is not None]

    async def claim_callbacks(
        self, consumer: str, count: int, cursor: str
    ) -> tuple[list[CallbackEntry], str]:
        """Up to ``count`` callbacks whose worker has not kept them within the visibility timeout (it
        died, or stopped before they ended), as ``claim`` does for jobs."""
        claimed, cursor = await self._claim(self.callback_stream, CALLBACK_GROUP, consumer, count, cursor)
        callbacks = [
            found for entry, times in claimed if (found := _callback_entry(entry, times)) is not None
        ]
        return callbacks, cursor

    async def keep_callbacks(self, consumer: str, entry_ids: Sequence[str]) -> int:
        """Reset the visibility timeout of the callbacks the consumer holds; how many it still held."""
        if not entry_ids:
            return 0
        with self._reachable():
            kept = await self._keep(keys=[self.callback_stream], args=[CALLBACK_GROUP, consumer, *entry_ids])
        return int(kept)

    async def callback_ended(self, entry: CallbackEntry, status: str, attempts: int, detail: str) -> bool:
        """Record how the callback ended and, in the same step, acknowledge and delete its entry; False if
        the job's record has expired (nothing is written, the entry is acknowledged all the same)."""
        [written] = await self.callbacks_ended([(entry, status, attempts, detail)])
        return written

    async def callbacks_ended(self, outcomes: Sequence[tuple[CallbackEntry, str, int, str]]) -> list[bool]:
        """``callback_ended`` for each (entry, status, attempts, detail), in one round trip."""
        if not outcomes:
            return []
        with self._reachable():
            async with self._redis.pipeline(transaction=False) as pipe:
                for entry, status, attempts, detail in outcomes:
                    await self._callback(
                        keys=[self.callback_stream, _job_key(entry.job_id)],
                        args=[CALLBACK_GROUP, entry.entry_id, status, attempts, detail],
                        client=pipe,
                    )
                written = await pipe.execute()
        return [bool(flag) for flag in written]

    async def _read(self, stream: str, group: str, consumer: str, count: int, block_ms: int) -> list[Any]:
        with self._reachable():
            reply: Any = await self._redis.xreadgroup(
                group, consumer, {stream: ">"}, count=count, block=block_ms or None
            )
        return reply[0][1] if reply else []  # protocol 2: [[stream, [(id, fields), ...]]]

    async def _claim(
        self, stream: str, group: str, consumer: str, count: int, cursor: str
    ) -> tuple[list[tuple[Any, int]], str]:
        """The entries claimed (each with its delivery count) and the cursor to go on from."""
        with self._reachable():
            reply = await self._redis.xautoclaim(
                stream, group, consumer, self.visibility_ms, cursor, count=count
            )
            cursor, entries = _text(reply[0]), [entry for entry in reply[1] if entry and entry[1]]
            if not entries:
                return [], cursor
            async with self._redis.pipeline(transaction=False) as pipe:
                for entry_id, _ in entries:
                    pipe.xpending_range(stream, group, entry_id, entry_id, 1)
                pending = await pipe.execute()
        times = [int(found[0]["times_delivered"]) if found else 1 for found in pending]
        return list(zip(entries, times, strict=True)), cursor

    async def begin(self, deliveries: Sequence[Delivery], consumer: str) -> list[bool]:
        """Mark each job running; False for one that already has a result (it is acknowledged instead)."""
        if not deliveries:
            return []
        now = _now()
        with self._reachable():
            async with self._redis.pipeline(transaction=False) as pipe:
                for delivery in deliveries:
                    await self._begin(
                        keys=[self.stream, _job_key(delivery.job_id)],
                        args=[GROUP, delivery.entry_id, delivery.attempts, now, consumer],
                        client=pipe,
                    )
                started = await pipe.execute()
        return [bool(flag) for flag in started]

    async def finish(self, completions: Sequence[tuple[Delivery, Completion]]) -> list[bool]:
        """Record each run's end in one round trip; per job, whether this call changed its record.

        ``Done`` stores the result and acknowledges the entry (False: a result was stored already, and
        this one is dropped); ``Retry`` leaves the entry for redelivery; ``Dead`` moves the job to the
        dead-letter stream.
        """
        return [recorded.changed for recorded in await self.complete(completions)]

    async def complete(self, completions: Sequence[tuple[Delivery, Completion]]) -> list[Recorded]:
        """``finish``, with the reason a dead-lettered job's record now holds."""
        if not completions:
            return []
        now = _now()
        with self._reachable():
            async with self._redis.pipeline(transaction=False) as pipe:
                for delivery, completion in completions:
                    await self._queue_completion(pipe, delivery, completion, now)
                replies = await pipe.execute()
        return [
            Recorded(True, _text(reply)) if isinstance(reply, bytes | str) else Recorded(bool(reply))
            for reply in replies
        ]

    async def _queue_completion(
        self, pipe: Any, delivery: Delivery, completion: Completion, now: str
    ) -> None:
        key = _job_key(delivery.job_id)
        entry = delivery.entry_id
        if isinstance(completion, Done):
            field, result = "result", completion.result
            if completion.response_ref is not None:  # a large result: its URL in the object store
                field, result = "response_ref", completion.response_ref.encode()
            args: list[Any] = [GROUP, entry, result, completion.version, now, self.ttl_ms, field,
                               *delivery.callback_items()]  # fmt: skip
            await self._done(keys=[self.stream, key, self.callback_stream], args=args, client=pipe)
        elif isinstance(completion, Retry):
            await self._retry(keys=[key], args=[completion.error], client=pipe)
        else:
            last = "1" if completion.with_last_error else "0"
            args = [GROUP, entry, delivery.job_id, completion.reason, last, delivery.attempts, now,
                    self.ttl_ms, *delivery.callback_items(), *delivery.fields()]  # fmt: skip
            keys = [self.stream, key, self.dead_stream, self.callback_stream]
            await self._dead(keys=keys, args=args, client=pipe)


def _job_key(job_id: str) -> str:
    return f"job:{job_id}"


def _now() -> str:
    return f"{time.time():.3f}"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _float(value: str | None) -> float | None:
    return float(value) if value else None


def _job_status(job_id: str, raw: dict[Any, Any]) -> JobStatus | None:
    if not raw:
        return None
    fields = {_text(key): value for key, value in raw.items()}
    text = {key: _text(value) for key, value in fields.items() if key != "result"}
    return JobStatus(
        id=job_id,
        state=text.get("state", "pending"),
        model=text.get("model", ""),
        version=text.get("version") or None,
        version_requested=text.get("version_requested") or None,
        caller=text.get("caller") or None,
        attempts=int(text.get("attempts", "0")),
        created=float(text.get("created", "0")),
        started=_float(text.get("started")),
        finished=_float(text.get("finished")),
        error=text.get("error"),
        result=_bytes(fields["result"]) if "result" in fields else None,
        callback=_callback_record(text),
        response_ref=text.get("response_ref"),
        input_ref=text.get("input_ref"),
    )


def _callback_record(text: dict[str, str]) -> CallbackRecord | None:
    url = text.get("callback_url")
    if url is None:
        return None
    attempts = text.get("callback_attempts")
    return CallbackRecord(
        url=url,
        status=text.get("callback_status", "pending"),
        attempts=int(attempts) if attempts else None,
        detail=text.get("callback_detail"),
    )


def _delivery(entry: Any, attempts: int) -> Delivery | None:
    """A stream entry as a job; None for an entry that is not one of ours (it is left alone)."""
    entry_id, raw = entry
    fields = {_text(key): value for key, value in raw.items()}
    try:
        header_length = fields.get("header_length")
        return Delivery(
            entry_id=_text(entry_id),
            job_id=_text(fields["id"]),
            model=_text(fields["model"]),
            version=_text(fields["version"]),
            body=_bytes(fields["body"]),
            header_length=None if header_length is None else int(_text(header_length)),
            caller=_text(fields.get("caller", b"")) or None,
            attempts=attempts,
            callback_url=_text(fields["callback_url"]) if "callback_url" in fields else None,
            input_ref=_text(fields["input_ref"]) if "input_ref" in fields else None,
        )
    except (KeyError, ValueError):
        return None


def _callback_entry(entry: Any, deliveries: int) -> CallbackEntry | None:
    """A callbacks stream entry; None for an entry that is not one of ours (it is left alone)."""
    entry_id, raw = entry
    fields = {_text(key): _text(value) for key, value in raw.items()}
    try:
        return CallbackEntry(
            entry_id=_text(entry_id), job_id=fields["id"], model=fields["model"], version=fields["version"],
            caller=fields.get("caller") or None, deliveries=deliveries,
        )  # fmt: skip
    except KeyError:
        return None
