"""ServerTarget with several servers (issue 14 point 10): config.yaml is written once and every server whose
pid file names a live process gets SIGHUP; a server that is gone is skipped and said so, since a server
reads config.yaml when it starts. Real child processes stand in for the servers: each records the SIGHUP it
receives."""

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from servectl.experiments.targets import ServerTarget
from tests.servectl.experiments.conftest import MODEL

CHILD = """import signal, sys, time
path = sys.argv[1]
signal.signal(signal.SIGHUP, lambda *_: open(path, "a").write("hup\\n"))
open(path, "a").write("ready\\n")
time.sleep(30)
"""
CONFIG = 'variants:\n  weights:\n    "1": 50  # baseline\n    "2": 50\n'


@pytest.fixture
def children(tmp_path: Path) -> Iterator[list[tuple[subprocess.Popen[bytes], Path]]]:
    """Two processes that record each SIGHUP into their own file; killed at the end."""
    started = []
    for name in ("a", "b"):
        seen = tmp_path / f"{name}.seen"
        started.append((subprocess.Popen([sys.executable, "-c", CHILD, str(seen)]), seen))
    deadline = time.monotonic() + 10
    while not all(seen.exists() for _, seen in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    yield started
    for process, _ in started:
        process.kill()
        process.wait(timeout=10)


def _wait_for(path: Path, text: str) -> str:
    deadline = time.monotonic() + 5
    while text not in path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    return path.read_text()


def test_every_live_server_in_the_pid_files_is_signalled_and_a_gone_one_skipped(
    tmp_path: Path, children: list[tuple[subprocess.Popen[bytes], Path]]
) -> None:
    (tmp_path / MODEL).mkdir()
    (tmp_path / MODEL / "config.yaml").write_text(CONFIG)
    (a, a_seen), (b, _) = children
    files = tmp_path / "a.pid", tmp_path / "b.pid", tmp_path / "c.pid"
    files[0].write_text(f"{a.pid}\n")
    files[1].write_text(f"{b.pid}\n")
    b.kill()
    b.wait(timeout=10)
    target = ServerTarget(tmp_path, MODEL, None, pid_files=files)
    done = target.apply({"1": 100, "2": 0})
    assert target.weights() == {"1": 100, "2": 0}, "config.yaml is written once for all servers"
    assert "hup" in _wait_for(a_seen, "hup"), "the live server got SIGHUP"
    assert f"sent SIGHUP to server pid {a.pid} (from a.pid)" in done, done
    assert f"server pid {b.pid} (from b.pid) is gone" in done, done
    assert "no server: " in done and "c.pid does not exist" in done, done


def test_a_pid_file_without_a_pid_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / MODEL).mkdir()
    (tmp_path / MODEL / "config.yaml").write_text(CONFIG)
    (tmp_path / "a.pid").write_text("not a pid\n")
    target = ServerTarget(tmp_path, MODEL, None, pid_files=(tmp_path / "a.pid",))
    with pytest.raises(ValueError, match=r"a\.pid does not hold a pid: 'not a pid"):
        target.apply({"1": 100, "2": 0})
