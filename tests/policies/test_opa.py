"""The OPA runner: a real server on 127.0.0.1 and a free port, always stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from policies.opa import (
    OUTPUT_LIMIT,
    Endpoint,
    Gate,
    OpaError,
    find_opa,
    local_server,
    one_line,
    policy_paths,
    server_command,
)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_server_listens_on_loopback_and_is_stopped(opa_bin: Path) -> None:
    with local_server(opa_bin) as endpoint:
        assert endpoint.host == "127.0.0.1"
        assert port_open(endpoint.port), "the server answers while in use"
    assert not port_open(endpoint.port), "the server is gone afterwards"


def test_server_is_stopped_on_error(opa_bin: Path) -> None:
    ports: list[int] = []

    def interrupted() -> None:
        with local_server(opa_bin) as endpoint:
            ports.append(endpoint.port)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert ports and not port_open(ports[0]), "Ctrl-C still stops the server"


def test_missing_binary_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(OpaError, match="run `make setup`"):
        find_opa(tmp_path / "opa")


LOADING = (
    "OPA exited with code 1 before it was ready; "
    "it printed: error: load error: 1 error occurred during loading: "
)


@pytest.mark.parametrize(
    ("name", "content", "opa_said"),
    [
        ("org.json", "{not json", "{path}: invalid character 'n' looking for beginning of object key string"),
        (
            "org.rego",
            "package org\n\nallow if {\n\tinput.a ==\n",
            "{path}:5: rego_parse_error: unexpected eof token | input.a ==",
        ),
    ],
)
def test_load_error_carries_opa_message(
    opa_bin: Path, tmp_path: Path, name: str, content: str, opa_said: str
) -> None:
    broken = tmp_path / name
    broken.write_text(content)
    started = time.monotonic()
    with pytest.raises(OpaError) as caught, local_server(opa_bin, [broken], ready_timeout=60):
        pass
    # OPA prints load errors on stdout: the message is OPA's own, with the file (and line).
    assert str(caught.value) == LOADING + opa_said.format(path=broken), str(caught.value)
    assert time.monotonic() - started < 30, (
        "a server that cannot load is reported when it exits, not at timeout"
    )


def test_load_error_keeps_opa_output_as_printed(opa_bin: Path, tmp_path: Path) -> None:
    broken = tmp_path / "org.rego"
    broken.write_text("package org\n\nallow if {\n\tinput.a ==\n")
    with pytest.raises(OpaError) as caught, local_server(opa_bin, [broken]):
        pass
    lines = caught.value.output.splitlines()
    assert lines[0].endswith(f"{broken}:5: rego_parse_error: unexpected eof token"), lines
    assert [line.strip() for line in lines[1:]] == ["input.a ==", "^"], "the caret still points into the line"


def test_evaluation_error_carries_opa_answer(opa_bin: Path, tmp_path: Path) -> None:
    # A second definition of the gate's result that conflicts with the real one when input.boom.
    boom = tmp_path / "boom.rego"
    boom.write_text('package gate.report\n\nresult := "boom" if input.boom\n')
    with local_server(opa_bin, [boom]) as endpoint, Gate(endpoint) as gate, pytest.raises(OpaError) as caught:
        gate.evaluate({"boom": True, "stack": "uae-prod", "resources": []})
    message = str(caught.value)
    assert message.startswith("OPA could not evaluate gate.report.result: 500 Server Error"), message
    answer = json.loads(message.split("; OPA answered: ", 1)[1])
    assert answer["code"] == "internal_error", answer
    assert [e["code"] for e in answer["errors"]] == ["eval_conflict_error"], answer
    assert f'"boom" at {boom}:3' in answer["errors"][0]["message"], answer


def opa_process(port: int) -> int:
    """The pid of this process's OPA child serving on port."""
    (pid,) = (
        c
        for c in children(os.getpid())
        if f"127.0.0.1:{port}".encode() in Path(f"/proc/{c}/cmdline").read_bytes()
    )
    return pid


def query_after_crash(opa_bin: Path) -> None:
    """Query a local server whose OPA has crashed."""
    with local_server(opa_bin) as endpoint, Gate(endpoint) as gate:
        pid = opa_process(endpoint.port)
        # SIGQUIT makes the Go runtime print every goroutine's stack on stderr and exit 2: a
        # real crash, with more output than an error keeps.
        os.kill(pid, signal.SIGQUIT)
        assert wait_for(lambda: not alive(pid)), "OPA ignored SIGQUIT"
        gate.evaluate({"stack": "uae-prod", "resources": []})


def test_opa_exit_in_use_carries_its_output(opa_bin: Path) -> None:
    with pytest.raises(OpaError) as caught:
        query_after_crash(opa_bin)
    err = caught.value
    assert str(err).startswith("OPA could not evaluate gate.report.result: "), str(err)
    assert f"(the local OPA had exited with code 2; it printed: {one_line(err.output)})" in str(err), str(err)
    assert err.output.startswith("..."), "the start of the dump is dropped, the end kept"
    assert len(err.output) <= OUTPUT_LIMIT + len("..."), len(err.output)
    assert ".go:" in err.output, err.output


def test_server_that_never_answers_times_out_with_its_output(tmp_path: Path) -> None:
    # Real OPA cannot be made to hang before listening; a stand-in prints on both streams and waits.
    stand_in = tmp_path / "opa"
    stand_in.write_text(
        "#!/bin/sh\necho starting on stdout\necho still loading on stderr >&2\nexec sleep 60\n"
    )
    stand_in.chmod(0o755)
    with pytest.raises(OpaError) as caught, local_server(stand_in, ready_timeout=0.5) as endpoint:
        pytest.fail(f"a server that never listens was reported ready on {endpoint}")
    assert str(caught.value).startswith("OPA did not become ready on port "), str(caught.value)
    assert str(caught.value).endswith(
        " within 0.5s; it printed: starting on stdout | still loading on stderr"
    ), str(caught.value)


@pytest.mark.parametrize(
    ("printed", "line"),
    [
        ("", ""),
        ("error: one\n", "error: one"),
        (
            "a.rego:5: rego_parse_error: x\n\t  input.a ==\n\t           ^\n",
            "a.rego:5: rego_parse_error: x | input.a ==",
        ),
        ("first\n\n  second   part  \n^^^\n", "first | second part"),
    ],
)
def test_one_line(printed: str, line: str) -> None:
    assert one_line(printed) == line


def test_server_loads_rules_and_data_but_no_tests() -> None:
    names = {p.name for p in policy_paths()}
    assert {"residency", "data", "lib", "gate"} <= names
    assert "pack" not in names
    command = server_command(Path("opa"), 1234)
    assert command[command.index("--addr") + 1] == "127.0.0.1:1234"
    assert "*_test.rego" in command


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8181", Endpoint(host="127.0.0.1", port=8181)),
        ("https://opa.internal", Endpoint(host="opa.internal", port=8181, ssl=True)),
    ],
)
def test_endpoint_parse(url: str, expected: Endpoint) -> None:
    assert Endpoint.parse(url) == expected


def test_endpoint_parse_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match="is not http"):
        Endpoint.parse("ftp://x")


def children(pid: int) -> set[int]:
    """The direct children of a process, from /proc (Linux)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(c) for c in path.read_text().split()} if path.exists() else set()


def alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][:1] not in {"Z", "X"}


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_server_dies_with_its_parent(opa_bin: Path, sig: signal.Signals) -> None:
    script = "from policies.opa import local_server\nimport time\nwith local_server():\n    time.sleep(60)\n"
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2])
    try:
        assert wait_for(lambda: bool(children(parent.pid))), "the OPA server never started"
        (server,) = children(parent.pid)
        parent.send_signal(sig)
        parent.wait(timeout=20)
        assert wait_for(lambda: not alive(server), timeout=10), f"OPA outlived its parent after {sig.name}"
    finally:
        parent.kill()
        parent.wait()
