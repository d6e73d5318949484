"""The access and audit log: one JSON line per request, never the payload."""

import asyncio
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

import orjson


@dataclass(slots=True)  # not frozen: a frozen dataclass costs a few microseconds per request to build
class AccessRecord:
    """What is logged for a request. No tensor data and no error text that could echo it."""

    request_id: str
    protocol: str
    model: str
    version: str
    status: int | str
    outcome: str
    latency_seconds: float
    caller: str | None
    error: str | None = None


class _Clock:
    """ISO-8601 UTC timestamps with milliseconds; the date part is formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        stamp = time.time()
        second = int(stamp)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{int((stamp - second) * 1000):03d}Z"


class AccessLog:
    """Writes records to a binary stream (stdout by default), one line each.

    Lines written while the event loop handles a burst of requests go out in one write at the
    end of that loop iteration, which saves a system call per request; nothing waits longer
    than the iteration, and a loop-less caller writes at once.
    """

    def __init__(self, stream: BinaryIO | None = None, enabled: bool = True) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._enabled = enabled
        self._clock = _Clock()
        self._pending: list[bytes] = []

    def write(self, record: AccessRecord) -> None:
        """Log one request; a full or closed stream must never fail the request."""
        if not self._enabled:
            return
        line = {
            "time": self._clock.now(),
            "event": "request",
            "request_id": record.request_id,
            "protocol": record.protocol,
            "model": record.model,
            "version": record.version,
            "status": record.status,
            "outcome": record.outcome,
            "latency_ms": round(record.latency_seconds * 1000, 3),
            "caller": record.caller,
        }
        if record.error is not None:
            line["error"] = record.error
        self._append(line)

    def write_event(self, event: str, fields: dict[str, object]) -> None:
        """Log something other than a request (an accepted feedback) on the same stream."""
        if self._enabled:
            self._append({"time": self._clock.now(), "event": event, **fields})

    def _append(self, line: Mapping[str, object]) -> None:
        self._pending.append(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
        if len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        """Write what is buffered."""
        lines, self._pending = self._pending, []
        try:
            self._stream.write(b"".join(lines))
            self._stream.flush()
        except (OSError, ValueError):
            pass


_EVENT_CLOCK = _Clock()


def log_event(event: str, **fields: object) -> None:
    """A server lifecycle event (start, model load failure, drain) as a JSON line on stderr."""
    line = {"time": _EVENT_CLOCK.now(), "event": event, **fields}
    sys.stderr.buffer.write(orjson.dumps(line, default=str) + b"\n")
    sys.stderr.buffer.flush()
