"""A callback receiver for the tests: an HTTP/1.1 server on 127.0.0.1 that records what it is sent.

It parses requests with h11, an HTTP/1.1 implementation independent of the sender's (httptools),
and answers from a script, so a test sees each callback as a real receiver would and can count the
attempts. ``Receiver`` runs on the test's event loop; ``ReceiverThread`` runs one on a thread of its
own, for the tests that drive server processes from plain (synchronous) code.
"""

import asyncio
import contextlib
import hashlib
import hmac
import ssl
import threading
from dataclasses import dataclass, field
from types import TracebackType

import h11


@dataclass
class Answer:
    """What the receiver does with one request: answer ``status``, or send ``raw``, or ``hang``."""

    status: int = 204
    headers: list[tuple[str, str]] = field(default_factory=list)
    raw: bytes | None = None
    hang: bool = False
    endless_body: bool = False


@dataclass
class Received:
    target: str
    headers: dict[str, str]
    body: bytes


def independent_signature(key: bytes, timestamp: str, body: bytes) -> str:
    """The documented recipe (serving_image/job_callbacks.py), written here rather than imported."""
    return "sha256=" + hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class Receiver:
    """An HTTP/1.1 server on 127.0.0.1 that records each request and answers from a script.

    The last answer repeats once the script runs out. ``paths`` gives a path (the target without
    its query) a script of its own, followed by that path's requests alone.
    """

    def __init__(
        self,
        *answers: Answer,
        tls: ssl.SSLContext | None = None,
        paths: dict[str, list[Answer]] | None = None,
    ) -> None:
        self.answers = list(answers) or [Answer()]
        self.paths = paths or {}
        self.requests: list[Received] = []
        self.body_bytes_sent = 0
        self.finished = 0
        self._tls = tls
        self._release = asyncio.Event()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "the receiver is not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def release(self) -> None:
        """End the hanging answers: each connection held by ``Answer(hang=True)`` is closed unanswered."""
        self._release.set()

    async def __aenter__(self) -> "Receiver":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._tls)
        return self

    async def __aexit__(self, *_: object) -> None:
        self._release.set()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            connection = h11.Connection(h11.SERVER)
            request = await self._read(connection, reader)
            if request is None:
                return
            await self._answer(self._next_answer(request), connection, writer)
        except (ConnectionError, ssl.SSLError):
            pass  # the sender closed first: what the endless-body and oversized-head tests expect
        finally:
            self.finished += 1
            writer.close()

    def _next_answer(self, request: Received) -> Answer:
        path = request.target.split("?")[0]
        script = self.paths.get(path)
        if script is None:
            return self.answers[min(len(self.requests) - 1, len(self.answers) - 1)]
        earlier = sum(1 for seen in self.requests if seen.target.split("?")[0] == path) - 1
        return script[min(earlier, len(script) - 1)]

    async def _read(self, connection: h11.Connection, reader: asyncio.StreamReader) -> Received | None:
        head: h11.Request | None = None
        body = b""
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                return None
        assert head is not None and head.method == b"POST", f"the sender sent {head!r}"
        headers = {name.decode(): value.decode() for name, value in head.headers}
        self.requests.append(Received(head.target.decode(), headers, body))
        return self.requests[-1]

    async def _answer(self, answer: Answer, connection: h11.Connection, writer: asyncio.StreamWriter) -> None:
        if answer.hang:  # until the test ends, or 5 s: a sender without a timeout then sees a close
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._release.wait()
            return
        if answer.raw is not None:
            writer.write(answer.raw)
            await writer.drain()
            return
        headers = [*answer.headers, ("connection", "close")]
        if not answer.endless_body:
            headers.append(("content-length", "0"))
        writer.write(connection.send(h11.Response(status_code=answer.status, headers=headers)) or b"")
        await writer.drain()
        for _ in range(4096 if answer.endless_body else 0):  # 256 MiB at most, bounded
            writer.write(connection.send(h11.Data(data=b"x" * 65536)) or b"")
            await writer.drain()
            self.body_bytes_sent += 65536
        if not answer.endless_body:
            writer.write(connection.send(h11.EndOfMessage()) or b"")
            await writer.drain()


class ReceiverThread:
    """A ``Receiver`` serving on an event loop of its own thread while the ``with`` block runs."""

    def __init__(self, *answers: Answer, paths: dict[str, list[Answer]] | None = None) -> None:
        self.receiver = Receiver(*answers, paths=paths)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="callback-receiver", daemon=True)

    @property
    def port(self) -> int:
        return self.receiver.port

    @property
    def origin(self) -> str:
        """The allowed-hosts entry for this receiver (plain http, its port)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[Received]:
        """What arrived so far (a copy: the receiver's thread appends to the list)."""
        return list(self.receiver.requests)

    def to(self, path: str) -> list[Received]:
        """What arrived for ``path`` (the target without its query)."""
        return [request for request in self.requests if request.target.split("?")[0] == path]

    def __enter__(self) -> "ReceiverThread":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.receiver.__aenter__(), self._loop).result(timeout=10)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.receiver.__aexit__(), self._loop).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
