"""Runs the retrain command for triggers, one at a time per model, and logs each run as a JSON line.

While a model's retrain runs, one further trigger is queued; later ones are coalesced (dropped and
logged): Alertmanager repeats a firing alert, so nothing that still fires is lost, and the retrain
command itself skips a trigger key it has already handled (exit 4).
"""

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from servectl.retrain_receiver.alerts import Trigger
from servectl.retrain_receiver.config import ReceiverConfig

OUTCOMES = {0: "published", 1: "failed", 2: "bad_input", 3: "refused", 4: "skipped"}
"""The retrain contract's exit codes; any other code is a failure."""
REASON_CHARS = 500


class JsonLog:
    """One JSON object per line, `{"event": ..., ...}`, safe to call from several threads."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()

    def __call__(self, event: str, **fields: Any) -> None:
        line = json.dumps({"time": round(time.time(), 3), "event": event, **fields}, sort_keys=True)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


@dataclass(frozen=True)
class Result:
    """How one run ended."""

    exit_code: int | None
    """None when the command could not be started or was killed on timeout."""
    outcome: str
    reason: str


Execute = Callable[[Sequence[str], float], Result]


def _last_line(*texts: str) -> str:
    for text in texts:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return lines[-1][:REASON_CHARS]
    return ""


def run_process(argv: Sequence[str], timeout: float) -> Result:
    """Run `argv` to completion (killed after `timeout` s); the reason is the last line it printed."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return Result(None, "failed", f"timed out after {timeout:g} s and was killed")
    except OSError as error:
        return Result(None, "failed", f"could not start {argv[0]}: {error}")
    outcome = OUTCOMES.get(done.returncode, "failed")
    return Result(done.returncode, outcome, _last_line(done.stderr, done.stdout))


def command_line(config: ReceiverConfig, trigger: Trigger) -> list[str]:
    """The contract's arguments: `--model M --data URI --trigger KEY`, then the configured extras."""
    target = config.models[trigger.model]
    return [*target.command, "--model", trigger.model, "--data", target.data, "--trigger", trigger.key,
            *target.args]  # fmt: skip


@dataclass
class _Slot:
    running: Trigger | None = None
    pending: Trigger | None = None


class Runner:
    """Serialises retrains per model; different models retrain in parallel."""

    def __init__(self, config: ReceiverConfig, log: JsonLog, execute: Execute = run_process) -> None:
        self._config = config
        self._log = log
        self._execute = execute
        self._slots: dict[str, _Slot] = {m: _Slot() for m in config.models}
        self._changed = threading.Condition()
        self.runs = 0
        """Runs finished since start."""

    def submit(self, trigger: Trigger) -> str:
        """Start, queue or coalesce `trigger`; return which ("started", "queued", "already_running",
        "already_queued" or "coalesced")."""
        with self._changed:
            slot = self._slots[trigger.model]
            if slot.running is None:
                slot.running = trigger
                decision = "started"
                threading.Thread(target=self._work, args=(trigger.model,), daemon=True).start()
            elif slot.running.key == trigger.key:
                decision = "already_running"
            elif slot.pending is None:
                slot.pending, decision = trigger, "queued"
            elif slot.pending.key == trigger.key:
                decision = "already_queued"
            else:
                decision = "coalesced"
        self._log(f"retrain_{decision}", model=trigger.model, trigger=trigger.key)
        return decision

    def _work(self, model: str) -> None:
        while True:
            with self._changed:
                trigger = self._slots[model].running
            if trigger is None:
                return
            self._run(trigger)
            with self._changed:
                slot = self._slots[model]
                slot.running, slot.pending = slot.pending, None
                self.runs += 1
                self._changed.notify_all()
                if slot.running is None:
                    return

    def _run(self, trigger: Trigger) -> None:
        argv = command_line(self._config, trigger)
        self._log("retrain_running", model=trigger.model, trigger=trigger.key, argv=argv)
        started = time.monotonic()
        result = self._execute(argv, self._config.timeout_seconds)
        self._log(
            "retrain_finished",
            model=trigger.model,
            trigger=trigger.key,
            exit_code=result.exit_code,
            outcome=result.outcome,
            reason=result.reason,
            seconds=round(time.monotonic() - started, 3),
        )

    def status(self) -> dict[str, dict[str, str | None]]:
        """Per model: the running and the queued trigger keys."""
        with self._changed:
            return {
                m: {
                    "running": s.running.key if s.running else None,
                    "queued": s.pending.key if s.pending else None,
                }
                for m, s in self._slots.items()
            }

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no retrain runs or is queued; False if that took longer than `timeout` s."""
        with self._changed:
            return self._changed.wait_for(
                lambda: all(s.running is None for s in self._slots.values()), timeout=timeout
            )
