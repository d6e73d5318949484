"""The local OPA's lifecycle, in this process: the readiness wait, its client, the stop, and what errors say.

The readiness wait's loop is checked with stand-in callables and a stand-in clock, so that every order
of events (ready at once, ready later, exited, the deadline reached exactly) is set, not raced. Its
HTTP client is checked against a stand-in server on 127.0.0.2 that answers as told: one request per
health check, given up after a second. The rest (the stop of a server that ignores SIGTERM, the death
signal a server is started with) run real processes; the waits they test are bounded by the processes
themselves, so a slow machine can only make a test slower, never make it fail.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from policies import opa
from policies.opa import OUTPUT_LIMIT, Endpoint, OpaError, local_server
from tests.policies.test_opa_local import stand_in

PR_SET_PDEATHSIG, PR_GET_PDEATHSIG = 1, 2


@dataclass
class Events:
    """A script of the loop's world: what each health check answers, when the process exits, the clock."""

    health: list[bool]
    exits_at_check: int | None = None
    times: list[float] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def healthy(self) -> bool:
        self.log.append("health")
        return self.health.pop(0)

    def exited(self) -> bool:
        self.log.append("exited?")
        return self.exits_at_check is not None and self.log.count("health") >= self.exits_at_check

    def clock(self) -> float:
        self.log.append("clock")
        return self.times.pop(0)


@pytest.mark.parametrize(
    ("health", "exits_at_check", "times", "in_time", "log"),
    [
        pytest.param([True], None, [], True, ["health"], id="ready at once: nothing else is looked at"),
        pytest.param(
            [False, False, True],
            None,
            [0.0, 9.99],
            True,
            ["health", "exited?", "clock"] * 2 + ["health"],
            id="ready before the deadline",
        ),
        pytest.param(
            [False, False, False],
            2,
            [0.0],
            True,
            ["health", "exited?", "clock", "health", "exited?"],
            id="exited: the wait ends at once, in time (the caller reads the exit)",
        ),
        pytest.param(
            [False, False],
            None,
            [9.99, 10.0],
            False,
            ["health", "exited?", "clock"] * 2,
            id="the deadline reached exactly: out of time",
        ),
        pytest.param([False], None, [10.01], False, ["health", "exited?", "clock"], id="past the deadline"),
    ],
)
def test_the_readiness_loop(
    health: list[bool], exits_at_check: int | None, times: list[float], in_time: bool, log: list[str]
) -> None:
    events = Events(list(health), exits_at_check, list(times))
    got = opa._await_ready(events.healthy, events.exited, 10.0, events.clock)
    assert (got, events.log) == (in_time, log), events.log


@dataclass
class Server:
    """What the stand-in answers the health checks, and how many it received."""

    statuses: list[int]
    delay: float = 0.0
    requests: int = 0


@pytest.fixture
def health_server() -> Iterator[tuple[Endpoint, Server]]:
    server_state = Server(statuses=[200])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server_state.requests += 1
            status = (
                server_state.statuses.pop(0) if len(server_state.statuses) > 1 else server_state.statuses[0]
            )
            time.sleep(server_state.delay)  # a server slow to answer, not a wait for the test
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    class Quiet(ThreadingHTTPServer):
        def handle_error(self, *_: Any) -> None:
            pass  # the client gave up on a slow answer: writing it fails, as it should

    # Not 127.0.0.1: the client must ask the host it is given.
    httpd = Quiet(("127.0.0.2", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield Endpoint(host="127.0.0.2", port=httpd.server_address[1]), server_state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def health_check(endpoint: Endpoint) -> bool:
    with opa._readiness_client(endpoint) as client:
        healthy: bool = client.check_health()
        return healthy


def test_a_health_check_asks_the_endpoints_host(health_server: tuple[Endpoint, Server]) -> None:
    endpoint, server = health_server
    assert health_check(endpoint), "a server answering 200 on the endpoint's host is healthy"
    assert server.requests == 1, server.requests


def test_a_health_check_is_one_request_never_retried(health_server: tuple[Endpoint, Server]) -> None:
    # Then 200: a client that retried would report healthy after its retries.
    endpoint, server = health_server
    server.statuses = [500, 500, 500, 200]
    assert not health_check(endpoint), "a 500 is not healthy, and is not asked again"
    assert server.requests == 1, f"one health check made {server.requests} requests"


def test_a_health_check_gives_up_on_a_slow_answer_after_a_second(
    health_server: tuple[Endpoint, Server],
) -> None:
    # The answer comes after 1.25 s: the check has given up at 1 s, so that the wait can look at the
    # process and the deadline; a longer timeout (or none) would take the answer as healthy.
    endpoint, server = health_server
    server.delay = 1.25
    assert not health_check(endpoint), "an answer later than a second is not waited for"
    assert server.requests == 1, f"one health check made {server.requests} requests"


def test_a_server_that_exits_during_the_wait_is_reported_as_exited(tmp_path: Path) -> None:
    # The stand-in never listens and ends after 0.9 s, long after the 0.1 s deadline: between two
    # health checks the wait looks at the process for only 50 ms, so it reports the deadline. A wait
    # that blocked on the process (for a second, or until it ends) would report its exit instead.
    binary = stand_in(tmp_path, "exec sleep 0.9")
    with pytest.raises(OpaError) as caught, local_server(binary, ready_timeout=0.1):
        pass
    assert str(caught.value).endswith(" within 0.1s; it printed nothing"), str(caught.value)


def test_a_query_error_is_reraised_without_waiting_for_a_live_server_to_exit() -> None:
    # A server that will end in 0.6 s is alive: the 0.1 s look at it says so. A look that waited
    # longer (or until it ends) would take a live server for a dead one.
    proc = subprocess.Popen(["sleep", "0.6"])
    try:
        assert not opa._exited(proc), "a live server is not reported as exited"
    finally:
        proc.kill()
        proc.wait()
    assert opa._exited(proc), "an ended server is"


def test_a_server_that_ignores_sigterm_is_killed_after_five_seconds(tmp_path: Path) -> None:
    # It ignores SIGTERM and would end by itself at 5.5 s: the stop kills it at 5 s. A stop that
    # waited longer (or without end) would see it exit by itself, with code 0.
    binary = stand_in(tmp_path, "trap '' TERM\necho ready\nexec sleep 5.5")
    proc = subprocess.Popen([binary], stdout=subprocess.PIPE)
    assert proc.stdout is not None, "stdout=PIPE gives a stream"
    try:
        assert proc.stdout.readline() == b"ready\n", "the stand-in ignores SIGTERM from here on"
        opa._stop(proc)
        assert proc.returncode == -signal.SIGKILL, f"ended with {proc.returncode}, not killed"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def death_signal(libc: ctypes.CDLL) -> int:
    sig = ctypes.c_int(-1)
    assert libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(sig)) == 0, "PR_GET_PDEATHSIG failed"
    return sig.value


def test_a_server_is_started_to_get_sigterm_when_its_parent_dies() -> None:
    # The function runs in the server's process before exec; run here, it sets this process's own
    # death signal, which is read back and reset.
    libc = ctypes.CDLL("libc.so.6")
    assert death_signal(libc) == 0, "the test process starts with no death signal"
    try:
        opa._die_with_parent()
        assert death_signal(libc) == signal.SIGTERM, "the server would outlive its parent"
    finally:
        libc.prctl(PR_SET_PDEATHSIG, 0)


class NoPrctl:
    """A C library without prctl (not Linux)."""


def no_libc(name: str) -> Any:
    raise OSError(f"{name}: cannot open shared object file")


@pytest.mark.parametrize(
    "library", [pytest.param(no_libc, id="no libc"), pytest.param(lambda _: NoPrctl(), id="no prctl")]
)
def test_a_server_starts_where_no_death_signal_can_be_set(
    monkeypatch: pytest.MonkeyPatch, library: Callable[[str], Any]
) -> None:
    monkeypatch.setattr(ctypes, "CDLL", library)
    opa._die_with_parent()  # no error: the server starts without it


@pytest.mark.parametrize(
    ("returncode", "said"),
    [
        (0, "code 0"),
        (3, "code 3"),
        (-signal.SIGKILL, "signal SIGKILL"),
        (-signal.SIGTERM, "signal SIGTERM"),
        (-99, "code -99"),
    ],
)
def test_an_exit_status_is_named_by_its_signal_or_code(returncode: int, said: str) -> None:
    assert opa._exit_status(returncode) == said, opa._exit_status(returncode)


class Answered(Exception):
    """An error with a `response` attribute, as requests' errors have."""

    def __init__(self, message: str, response: Any) -> None:
        super().__init__(message)
        self.response = response


class Text:
    def __init__(self, text: Any) -> None:
        self.text = text


@pytest.mark.parametrize(
    ("err", "described"),
    [
        pytest.param(ValueError("boom"), "boom", id="no response attribute"),
        pytest.param(Answered("boom", None), "boom", id="no response"),
        pytest.param(Answered("boom", object()), "boom", id="a response without text"),
        pytest.param(Answered("boom", Text(None)), "boom", id="a response whose text is None"),
        pytest.param(Answered("boom", Text("")), "boom", id="an empty answer"),
        pytest.param(
            Answered("boom", Text('{\n "code": "x"\n}')), 'boom; OPA answered: {"code": "x"}', id="JSON"
        ),
        pytest.param(
            Answered("boom", Text("bad\n  gateway\n")), "boom; OPA answered: bad | gateway", id="text"
        ),
        pytest.param(
            requests.HTTPError("503", response=None), "503", id="requests' error without a response"
        ),
        pytest.param(
            Answered("boom", Text("x" * (OUTPUT_LIMIT + 1))),
            f"boom; OPA answered: {'x' * OUTPUT_LIMIT}...",
            id="a long answer cut",
        ),
    ],
)
def test_an_error_is_described_with_opas_answer_if_any(err: Exception, described: str) -> None:
    assert opa._described(err) == described, opa._described(err)


def test_the_output_pipe_is_closed_once_read_to_its_end() -> None:
    read_end, write_end = os.pipe()
    stream = os.fdopen(read_end, "rb")
    tail = opa._OutputTail(stream)
    os.write(write_end, b"bye\n")
    os.close(write_end)
    assert tail.text() == "bye", "all it printed"
    tail.close()
    assert stream.closed, "the pipe is closed once its reader has seen the end"
