"""The local OPA: which binary runs, and what an error says about how it ended and what it printed.

Stand-in binaries (shell scripts) print set bytes and exit, so that the output an error carries can
be compared byte for byte; the real OPA shows how an exit by signal is reported.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from policies.opa import DEFAULT_OPA, OUTPUT_LIMIT, Gate, OpaError, find_opa, local_server, one_line
from tests.policies.test_opa import alive, opa_process, wait_for


def stand_in(tmp_path: Path, script: str, mode: int = 0o755) -> Path:
    path = tmp_path / "opa"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(mode)
    return path


def test_opa_bin_names_the_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = stand_in(tmp_path, "exit 0")
    monkeypatch.setenv("OPA_BIN", str(binary))
    assert find_opa() == binary, "$OPA_BIN is the binary when none is passed"
    assert find_opa(DEFAULT_OPA) == DEFAULT_OPA, "a binary passed wins over $OPA_BIN"
    monkeypatch.delenv("OPA_BIN")
    assert find_opa() == DEFAULT_OPA, "without $OPA_BIN, the project's own OPA"


@pytest.mark.parametrize("what", ["not executable", "a directory"])
def test_only_an_executable_file_is_taken_for_opa(tmp_path: Path, what: str) -> None:
    candidate = stand_in(tmp_path, "exit 0", mode=0o644) if what == "not executable" else tmp_path
    with pytest.raises(OpaError) as caught:
        find_opa(candidate)
    assert str(caught.value) == f"OPA not found at {candidate}: run `make setup` (or pass --opa-url)"


@pytest.mark.parametrize(
    ("printed", "kept"),
    [
        pytest.param("x" * OUTPUT_LIMIT, "x" * OUTPUT_LIMIT, id="exactly the limit: all of it"),
        pytest.param(
            "a" + "x" * OUTPUT_LIMIT, "..." + "x" * OUTPUT_LIMIT, id="one byte over: the start goes"
        ),
        pytest.param("bad \\377 byte", "bad \ufffd byte", id="not UTF-8: still shown"),
        pytest.param("", "", id="nothing"),
    ],
)
def test_an_opa_that_exits_at_once_carries_what_it_printed(tmp_path: Path, printed: str, kept: str) -> None:
    binary = stand_in(tmp_path, f"printf '{printed}'\nexit 3")
    with pytest.raises(OpaError) as caught, local_server(binary, ready_timeout=60):
        pass
    assert caught.value.output == kept, caught.value.output[:80]
    said = f"it printed: {one_line(kept)}" if kept else "it printed nothing"
    assert str(caught.value) == f"OPA exited with code 3 before it was ready; {said}", str(caught.value)[:200]


def test_an_opa_that_never_listens_carries_its_output(tmp_path: Path) -> None:
    binary = stand_in(tmp_path, "echo on stdout\necho on stderr >&2\nexec sleep 60")
    with pytest.raises(OpaError) as caught, local_server(binary, ready_timeout=0.5):
        pass
    assert caught.value.output == "on stdout\non stderr", caught.value.output


def test_an_error_not_from_a_local_opa_carries_no_output() -> None:
    assert OpaError("OPA returned no gate.report.result").output == ""


def test_output_is_drained_by_a_daemon_thread(opa_bin: Path) -> None:
    with local_server(opa_bin):
        drains = [t for t in threading.enumerate() if t.name == "opa-output"]
        assert len(drains) == 1, f"one named drain thread per server: {threading.enumerate()}"
        assert drains[0].daemon, "a drain blocked on OPA's pipe never keeps Python from exiting"


def query_after_kill(opa_bin: Path) -> None:
    """Query a local server whose OPA was killed by SIGKILL."""
    with local_server(opa_bin) as endpoint, Gate(endpoint) as gate:
        pid = opa_process(endpoint.port)
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: not alive(pid)), "OPA outlived SIGKILL"
        gate.evaluate({"stack": "uae-prod", "resources": []})


def test_an_opa_killed_in_use_is_reported_by_its_signal(opa_bin: Path) -> None:
    with pytest.raises(OpaError) as caught:
        query_after_kill(opa_bin)
    # What it printed depends on the machine (OPA warns when run as root): the signal is the point.
    assert "(the local OPA had exited with signal SIGKILL; it printed" in str(caught.value), str(caught.value)
