"""`status` reads the recorded processes (running, half up, stopped, with LSB exit codes) and `down`
stops them and removes the files. A running verdict also needs kube-apiserver's /readyz: that is tested
end to end in test_command.py; here the recorded processes are plain sleepers, which is all `status`
and `down` look at before that."""

import sys
from pathlib import Path

from servectl.cluster.lifecycle import DEGRADED, STOPPED, down, status
from servectl.cluster.processes import Recorded, is_running, start, stop
from servectl.cluster.state import Layout, State, write_state

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def _record(layout: Layout, *records: Recorded) -> None:
    layout.logs.mkdir(parents=True, exist_ok=True)
    write_state(layout, State("https://127.0.0.1:1", layout.kubeconfig, records))


def test_no_state_is_stopped_with_exit_code_3(tmp_path: Path) -> None:
    found = status(Layout(tmp_path))
    assert (found.state, found.exit_code, found.url) == (STOPPED, 3, None)


def test_one_process_dead_is_half_up_with_exit_code_1(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "state")
    layout.logs.mkdir(parents=True)
    alive = start("etcd", SLEEPER, layout.logs / "etcd.log")
    dead = start("kube-apiserver", SLEEPER, layout.logs / "apiserver.log")
    try:
        stop([dead])
        _record(layout, alive, dead)
        found = status(layout)
        assert (found.state, found.exit_code) == (DEGRADED, 1), found
        assert found.reason == "not running: kube-apiserver"
        assert found.processes == ((alive, True), (dead, False))
        assert down(layout) == []
        assert not is_running(alive), "down left a recorded process running"
        assert not layout.root.exists(), "down left the state behind"
    finally:
        stop([alive, dead], timeout=1)


def test_every_process_dead_is_stopped_and_down_cleans_up(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "state")
    layout.logs.mkdir(parents=True)
    dead = start("etcd", SLEEPER, layout.logs / "etcd.log")
    stop([dead])
    _record(layout, dead)
    found = status(layout)
    assert (found.state, found.url) == (STOPPED, "https://127.0.0.1:1"), found
    assert down(layout) == []
    assert not layout.root.exists()
