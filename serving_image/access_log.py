"""The access and audit log: one JSON line per request, never the payload."""

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

import orjson


@dataclass(frozen=True, slots=True)
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


class AccessLog:
    """Writes records to a binary stream (stdout by default), one line each, flushed."""

    def __init__(self, stream: BinaryIO | None = None, enabled: bool = True) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._enabled = enabled

    def write(self, record: AccessRecord) -> None:
        """Log one request; a full or closed stream must never fail the request."""
        if not self._enabled:
            return
        line = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
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
        try:
            self._stream.write(orjson.dumps(line) + b"\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass


def log_event(event: str, **fields: object) -> None:
    """A server lifecycle event (start, model load failure, drain) as a JSON line on stderr."""
    line = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event, **fields}
    sys.stderr.buffer.write(orjson.dumps(line, default=str) + b"\n")
    sys.stderr.buffer.flush()
