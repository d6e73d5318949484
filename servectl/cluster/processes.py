"""Detached processes that outlive the command that started them, recorded so a later command can find
and stop them.

A process is recorded by its pid and its start time from /proc (clock ticks since boot): a pid alone could
have been reused by an unrelated process by the time `down` runs, and signalling that would be wrong. A
zombie (exited, not yet reaped) counts as stopped. Stopping is SIGTERM, a bounded wait, then SIGKILL and
another bounded wait.
"""

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STOP_TIMEOUT = 20.0
"""SIGTERM to exit: etcd and kube-apiserver take a second or two; kube-apiserver drains for up to 60 s
when asked to, but not with the default --shutdown-delay-duration of 0."""
KILL_TIMEOUT = 10.0
POLL = 0.1
_CHILDREN: dict[int, "subprocess.Popen[bytes]"] = {}
"""Processes this Python process started, kept until reaped: dropping a running Popen warns, and holding
it lets `stop` collect the exit status so no zombie is left behind."""


@dataclass(frozen=True)
class Recorded:
    """A process this package started: its role, pid, start time and log."""

    name: str
    pid: int
    start: int
    """Field 22 of /proc/<pid>/stat: with the pid, it names one process for the machine's uptime."""
    log: Path

    def as_json(self) -> dict[str, Any]:
        """The record as stored in the state file."""
        return {"name": self.name, "pid": self.pid, "start": self.start, "log": str(self.log)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Recorded":
        """A record read back from the state file (`KeyError`/`TypeError`/`ValueError` if malformed)."""
        return cls(str(data["name"]), int(data["pid"]), int(data["start"]), Path(data["log"]))


def _stat(pid: int) -> tuple[str, int] | None:
    """The process's state letter and start time, or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its closing one.
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def is_running(record: Recorded) -> bool:
    """Whether the recorded process still runs: same pid, same start time, not a zombie."""
    stat = _stat(record.pid)
    return stat is not None and stat[1] == record.start and stat[0] not in ("Z", "X")


def start(name: str, args: list[str], log: Path) -> Recorded:
    """Start `args` in its own session (a terminal's Ctrl-C or hang-up does not reach it), stdin closed,
    stdout and stderr to `log` (replaced); its record."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    _CHILDREN[process.pid] = process
    stat = _stat(process.pid)
    # A process that exited at once has no /proc entry left to read a start time from (or is a zombie):
    # record start 0, which never matches, so it counts as stopped.
    return Recorded(name, process.pid, stat[1] if stat else 0, log)


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child, so it does not linger as a zombie."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]


def _wait_gone(records: list[Recorded], timeout: float) -> list[Recorded]:
    """Those of `records` still running after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for record in records:
            _reap(record.pid)
        alive = [r for r in records if is_running(r)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(POLL)


def _signal(records: Iterable[Recorded], signum: signal.Signals) -> None:
    for record in records:
        if is_running(record):
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signum)


def stop(records: list[Recorded], timeout: float = STOP_TIMEOUT) -> list[Recorded]:
    """SIGTERM to every running process in `records`, in reverse order (the last started depends on the
    earlier ones), a bounded wait, then SIGKILL to the survivors; those that survived even that."""
    _signal(reversed(records), signal.SIGTERM)
    alive = _wait_gone(records, timeout)
    _signal(alive, signal.SIGKILL)
    return _wait_gone(alive, KILL_TIMEOUT)


def tail(log: Path, lines: int = 15) -> str:
    """The last `lines` lines of `log` (what to show when a process fails), or a note if it is unreadable."""
    try:
        text = log.read_text(errors="replace")
    except OSError as error:
        return f"(no log: {error})"
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
