"""The OPA runner: a real server on 127.0.0.1 and a free port, always stopped."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from policies.opa import Endpoint, OpaError, find_opa, local_server, policy_paths, server_command


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


def test_bad_override_file_fails_with_opa_message(opa_bin: Path, tmp_path: Path) -> None:
    broken = tmp_path / "org.json"
    broken.write_text("{not json")
    with pytest.raises(OpaError, match="OPA"), local_server(opa_bin, [broken], ready_timeout=5):
        pass


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
