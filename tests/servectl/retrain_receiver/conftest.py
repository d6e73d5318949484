"""A retrain command the tests control: each call blocks until the test releases it, then returns the
result the test chose, so "one at a time" and queueing are observed without sleeping."""

import io
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from servectl.retrain_receiver.config import ReceiverConfig, parse_config
from servectl.retrain_receiver.runner import JsonLog, Result

WAIT = 10.0
"""Upper bound of every wait; none is expected to take more than milliseconds."""


@dataclass
class FakeCommand:
    """Records each call's argv; a call returns once `release()` is called for it."""

    calls: list[list[str]] = field(default_factory=list)
    active: int = 0
    most_active: int = 0
    results: list[Result] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _released: int = 0

    def __call__(self, argv: Sequence[str], timeout: float) -> Result:
        with self._cond:
            index = len(self.calls)
            self.calls.append(list(argv))
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            self._cond.notify_all()
            assert self._cond.wait_for(lambda: self._released > index, timeout=WAIT), "never released"
            self.active -= 1
            return self.results[index] if index < len(self.results) else Result(0, "published", "")

    def wait_calls(self, n: int) -> None:
        """Wait until `n` calls have started."""
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.calls) >= n, timeout=WAIT), self.calls

    def release(self, n: int = 1) -> None:
        """Let `n` more calls return."""
        with self._cond:
            self._released += n
            self._cond.notify_all()


@pytest.fixture
def command() -> FakeCommand:
    return FakeCommand()


@pytest.fixture
def config() -> ReceiverConfig:
    return parse_config(
        {
            "command": ["retrain"],
            "models": {"tabular-classifier": {"data": "s3://b/t.csv"}, "text-model": {"data": "/d/t.csv"}},
        }
    )


class Log(JsonLog):
    """A JsonLog into memory."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()
        super().__init__(self.buffer)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.buffer.getvalue().splitlines()]
        return [e for e in lines if name is None or e["event"] == name]


@pytest.fixture
def log() -> Log:
    return Log()
