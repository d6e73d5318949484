"""The jobs' own records in Redis (``job:{id}`` hashes, docs/async-inference.md) read back as figures.

Each hash holds the server's wall-clock times of the job: ``created`` (submit accepted), ``started``
(a worker began it) and ``finished`` (its result stored), to the millisecond. Throughput and latency
are computed from them, so they measure what the server did, not what a client saw.
"""

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from benchmarks.measures import percentile

JOB_PATTERN = "job:*"
SCAN_COUNT = 1000
DRAIN_POLL_S = 0.02


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job's state and times (seconds since the epoch; None where not reached)."""

    job_id: str
    state: str
    created: float
    started: float | None
    finished: float | None


@dataclass(frozen=True, slots=True)
class Throughput:
    """Jobs done over a span of the server's clock."""

    done: int
    not_done: int
    span_s: float

    @property
    def rows_per_s(self) -> float:
        """Done jobs per second of the span (one row each); 0.0 for an empty span."""
        return self.done / self.span_s if self.span_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Latency:
    """Percentiles of submit-to-stored times, in milliseconds."""

    jobs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def _number(value: bytes | None) -> float | None:
    return float(value) if value else None


def read_records(client: "redis.Redis", limit: int) -> list[JobRecord]:
    """Every job hash in the database (at most ``limit``: the benchmark owns this Redis)."""
    keys: list[bytes] = []
    for key in client.scan_iter(match=JOB_PATTERN, count=SCAN_COUNT):
        keys.append(key)
        if len(keys) >= limit:
            break
    records = []
    for start in range(0, len(keys), SCAN_COUNT):
        chunk = keys[start : start + SCAN_COUNT]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.hmget(key, "state", "created", "started", "finished")
        for key, (state, created, started, finished) in zip(chunk, pipe.execute(), strict=True):
            records.append(JobRecord(
                key.decode().removeprefix("job:"), (state or b"").decode(), _number(created) or 0.0,
                _number(started), _number(finished),
            ))  # fmt: skip
    return records


def clear_records(client: "redis.Redis", limit: int) -> int:
    """Delete every job hash (at most ``limit``), so the next run reads only its own; how many."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=JOB_PATTERN, count=SCAN_COUNT):
        batch.append(key)
        if len(batch) == SCAN_COUNT:
            deleted += client.unlink(*batch)
            batch = []
        if deleted + len(batch) >= limit:
            break
    if batch:
        deleted += client.unlink(*batch)
    return deleted


def wait_drained(client: "redis.Redis", stream: str, timeout_s: float) -> bool:
    """Poll until the stream is empty (every job finished: its entry is deleted then), up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.xlen(stream) == 0:
            return True
        time.sleep(DRAIN_POLL_S)
    return client.xlen(stream) == 0


def throughput(records: Sequence[JobRecord], start_field: str = "created") -> Throughput:
    """Done jobs over the span from the first ``start_field`` time (created or started) to the last finish."""
    done = [r for r in records if r.state == "done" and r.finished is not None]
    starts = [getattr(r, start_field) for r in done if getattr(r, start_field) is not None]
    if not done or not starts:
        return Throughput(0, len(records), 0.0)
    span = max(r.finished for r in done if r.finished is not None) - min(starts)
    return Throughput(len(done), len(records) - len(done), span)


def intake(records: Sequence[JobRecord]) -> Throughput:
    """Jobs taken in (any state) over the span from the first ``created`` time to the last."""
    if not records:
        return Throughput(0, 0, 0.0)
    created = [r.created for r in records]
    return Throughput(len(records), 0, max(created) - min(created))


def latency(records: Iterable[JobRecord]) -> Latency:
    """Percentiles of ``finished - created`` over the done jobs."""
    values = sorted(
        1000 * (r.finished - r.created) for r in records if r.state == "done" and r.finished is not None
    )
    return Latency(
        len(values), percentile(values, 0.5), percentile(values, 0.9), percentile(values, 0.99),
        values[-1] if values else 0.0,
    )  # fmt: skip


def states(records: Iterable[JobRecord]) -> Counter[str]:
    """How many jobs are in each state."""
    return Counter(r.state for r in records)
