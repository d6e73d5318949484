"""What survives between retrains: the trigger keys already handled and each model's last run.

One JSON file in the state directory, replaced atomically; a lock file per model keeps two retrains of
the same model from running at once (the second is skipped, not queued).
"""

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"


class Busy(Exception):
    """Another retrain of the model holds the lock."""


@dataclass(frozen=True)
class State:
    """The state directory of the retrain command."""

    directory: Path

    @property
    def path(self) -> Path:
        """The state file."""
        return self.directory / STATE_FILE

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"triggers": {}, "last_run": {}}
        document: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        return document

    def _write(self, document: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(partial, self.path)

    def handled(self, trigger: str) -> dict[str, Any] | None:
        """What became of a trigger key handled before (outcome, version, time), or None."""
        entry: dict[str, Any] | None = self._read()["triggers"].get(trigger)
        return entry

    def last_run(self, model: str) -> float | None:
        """When a retrain of the model last started training (seconds since the epoch)."""
        value = self._read()["last_run"].get(model)
        return None if value is None else float(value)

    def record_run(self, model: str, when: float) -> None:
        """A retrain of the model started training at ``when`` (the rate limit counts from here)."""
        document = self._read()
        document["last_run"][model] = when
        self._write(document)

    def record_trigger(self, trigger: str, outcome: str, version: str | None, when: float) -> None:
        """The trigger key was handled: a later run with the same key is skipped."""
        document = self._read()
        document["triggers"][trigger] = {"outcome": outcome, "version": version, "time": when}
        self._write(document)

    @contextmanager
    def lock(self, model: str) -> Iterator[None]:
        """Hold the model's lock for the block; :class:`Busy` when another process holds it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / f"{model}.lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Busy(f"another retrain of {model} is running") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
