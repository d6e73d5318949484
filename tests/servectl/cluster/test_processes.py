"""Detached processes: recorded by pid and start time, stopped with TERM then KILL, never confused with
another process that got the same pid."""

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from servectl.cluster import processes
from servectl.cluster.processes import Recorded, is_running, start, stop, tail

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
    "time.sleep(60)",
]


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Recorded]]:
    """Records of the processes a test starts; any still running at the end is killed."""
    records: list[Recorded] = []
    yield records
    stop(records, timeout=1)


def _printed_up(record: Recorded) -> bool:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if record.log.exists() and "up" in record.log.read_text():
            return True
        time.sleep(0.05)
    return False


def test_a_started_process_runs_in_its_own_session_and_logs(tmp_path: Path, started: list[Recorded]) -> None:
    record = start("sleeper", SLEEPER, tmp_path / "sleeper.log")
    started.append(record)
    assert is_running(record)
    assert _printed_up(record), "stdout goes to the log"
    session = int(Path(f"/proc/{record.pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    assert session == record.pid, "a new session: a terminal's Ctrl-C or hang-up does not reach it"


def test_stop_ends_it_with_sigterm_and_reaps_it(tmp_path: Path, started: list[Recorded]) -> None:
    record = start("sleeper", SLEEPER, tmp_path / "sleeper.log")
    started.append(record)
    assert stop([record]) == []
    assert not is_running(record)
    assert not Path(f"/proc/{record.pid}").exists(), "left as a zombie: not reaped"


def test_stop_kills_what_ignores_sigterm_after_the_bound(tmp_path: Path, started: list[Recorded]) -> None:
    record = start("stubborn", STUBBORN, tmp_path / "stubborn.log")
    started.append(record)
    assert _printed_up(record), "the handler is installed before it says up"
    began = time.monotonic()
    assert stop([record], timeout=1.0) == []
    took = time.monotonic() - began
    assert not is_running(record)
    assert 1.0 <= took < 1.0 + processes.KILL_TIMEOUT, f"SIGKILL after the 1 s bound, took {took:.1f} s"


def test_a_reused_pid_is_neither_running_nor_signalled(tmp_path: Path, started: list[Recorded]) -> None:
    record = start("sleeper", SLEEPER, tmp_path / "sleeper.log")
    started.append(record)
    impostor = Recorded("etcd", record.pid, record.start + 1, record.log)
    assert not is_running(impostor), "a pid with another start time is another process"
    assert stop([impostor], timeout=0.5) == []
    assert is_running(record), "stop signalled a process it did not start"


def test_a_record_round_trips_through_json(tmp_path: Path) -> None:
    record = Recorded("kube-apiserver", 123, 456, tmp_path / "a.log")
    assert Recorded.from_json(record.as_json()) == record


def test_tail_gives_the_last_lines_or_says_why_not(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(30)))
    assert tail(log, 2) == "line 28\nline 29"
    assert tail(tmp_path / "missing.log").startswith("(no log: ")
