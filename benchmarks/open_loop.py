"""Open-loop HTTP submission: request k is due at ``start + k / rate`` whatever the earlier answers.

A closed-loop generator (wrk) sends the next request only when an answer comes back, so a slow
server slows its own load down and hides its queueing. Here the requests leave at their times over
a pool of keep-alive connections; one that could not leave on time (every connection busy, or this
loop behind) is counted as late, and its due time is kept, so the delay is measured, not omitted.
Bounded by a request count and a time limit, each request by a timeout.
"""

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass

LATE_S = 0.005
"""A request sent this long after its due time counts as late."""
REQUEST_TIMEOUT_S = 10.0

_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True, slots=True)
class Sent:
    """One request: when it was due (wall clock, ``time.time()``), its status (0: no answer), the job id."""

    due: float
    status: int
    job_id: str | None


@dataclass(frozen=True, slots=True)
class OpenLoopResult:
    """Every request sent, how many left late, and how many of those found every connection busy."""

    sent: list[Sent]
    late: int
    elapsed_s: float
    no_free_connection: int = 0


def post_request(port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A whole HTTP/1.1 POST of ``body`` to 127.0.0.1, ready to write."""
    lines = [
        f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
        f"Content-Length: {len(body)}", *(f"{name}: {value}" for name, value in headers.items()),
    ]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


async def exchange(connection: _Connection, payload: bytes) -> tuple[int, bytes]:
    """Write one request and read its answer (the server's Content-Length framing): status and body."""
    reader, writer = connection
    writer.write(payload)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, (await reader.readexactly(length) if length else b"")


def _job_id(status: int, body: bytes) -> str | None:
    if status != 202:
        return None
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(json.loads(body)["id"])
    return None


class _Sender:
    """The pool of connections and the requests in flight."""

    def __init__(self, port: int, payload: bytes) -> None:
        self.port, self.payload = port, payload
        self.idle: asyncio.Queue[_Connection] = asyncio.Queue()
        self.sent: list[Sent] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def open(self, connections: int) -> None:
        for _ in range(connections):
            self.idle.put_nowait(await asyncio.open_connection("127.0.0.1", self.port))

    def send(self, due: float, connection: _Connection) -> None:
        task = asyncio.get_running_loop().create_task(self._one(due, connection))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _one(self, due: float, connection: _Connection) -> None:
        try:
            status, body = await asyncio.wait_for(exchange(connection, self.payload), REQUEST_TIMEOUT_S)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            self.sent.append(Sent(due, 0, None))
            connection[1].close()  # a broken connection is replaced, so the pool keeps its size
            with contextlib.suppress(OSError):
                self.idle.put_nowait(await asyncio.open_connection("127.0.0.1", self.port))
            return
        self.sent.append(Sent(due, status, _job_id(status, body)))
        self.idle.put_nowait(connection)

    async def close(self, timeout_s: float) -> None:
        if self.tasks:
            _, unfinished = await asyncio.wait(self.tasks, timeout=timeout_s)
            for task in unfinished:
                task.cancel()
        while not self.idle.empty():
            self.idle.get_nowait()[1].close()


async def _submit(
    port: int, payload: bytes, rate: float, count: int, time_limit_s: float, connections: int
) -> OpenLoopResult:
    sender = _Sender(port, payload)
    await sender.open(connections)
    start, wall = time.monotonic(), time.time()
    deadline, late, no_free_connection, index = start + time_limit_s, 0, 0, 0
    while index < count and time.monotonic() < deadline:
        due = index / rate
        ahead = start + due - time.monotonic()
        if ahead > 0:
            await asyncio.sleep(ahead)  # pacing: the schedule, not a wait for another task
            continue
        no_free_connection += sender.idle.empty()
        try:
            connection = await asyncio.wait_for(sender.idle.get(), max(0.001, deadline - time.monotonic()))
        except TimeoutError:
            break
        late += time.monotonic() - (start + due) > LATE_S
        sender.send(wall + due, connection)
        index += 1
    await sender.close(REQUEST_TIMEOUT_S)
    sent = sorted(sender.sent, key=lambda s: s.due)
    return OpenLoopResult(sent, late, time.monotonic() - start, no_free_connection)


def submit_open_loop(
    port: int, payload: bytes, rate: float, count: int, time_limit_s: float, connections: int = 64
) -> OpenLoopResult:
    """Send ``payload`` ``count`` times at ``rate`` per second (stopping at ``time_limit_s``)."""
    if rate <= 0 or count < 0:
        raise ValueError(f"rate must be positive and count non-negative, got {rate} and {count}")
    return asyncio.run(_submit(port, payload, rate, count, time_limit_s, connections))
