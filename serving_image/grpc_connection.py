"""Unary gRPC calls over an HTTP/2 connection: the method table, the call's limits, deadlines and status.

What gRPC adds to ``serving_image.http2_connection``: a request must be a POST of
``application/grpc`` to a known method (else HTTP 405/415 with a JSON body, or UNIMPLEMENTED);
its one length-prefixed message, gzip-compressed or not, is parsed and handed to the handler as a
task, cancelled by RST_STREAM or by its ``grpc-timeout``; the answer is the message and the status
in trailers, or a Trailers-Only status.
"""

import asyncio
import sys
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from serving_image.grpc_wire import (
    RESPONSE_HEADERS,
    SUPPORTED_ENCODINGS,
    Call,
    Handler,
    Parser,
    RpcError,
    frame_message,
    http_error_block,
    parse_timeout,
    status_trailers,
    trailers_only,
    unframe_message,
)  # fmt: skip
from serving_image.http2_connection import Http2Connection, Problem, Stream
from serving_image.http2_frames import Flag, FrameType, frame
from serving_image.http2_headers import RequestHead, check_request_headers

if TYPE_CHECKING:
    from serving_image.grpc_server import GrpcServer

_HTTP1_REFUSAL = orjson.dumps(
    {"error": "this port serves gRPC (HTTP/2 with prior knowledge); send HTTP/1.1 requests to the REST port"}
)
_PROBLEM_STATUS = {
    Problem.TOO_LARGE: "RESOURCE_EXHAUSTED",
    Problem.TOO_SLOW: "DEADLINE_EXCEEDED",
    Problem.SHUTTING_DOWN: "UNAVAILABLE",
}


@dataclass(slots=True, eq=False)
class GrpcStream(Stream):
    """A stream carrying one call."""

    head: RequestHead | None = None
    refusal: tuple[int, str] | None = None  # an HTTP error to answer once the request has arrived
    deadline: asyncio.TimerHandle | None = None
    timed_out: bool = False


class GrpcConnection(Http2Connection):
    """One connection's gRPC calls."""

    http1_refusal = _HTTP1_REFUSAL

    def __init__(self, server: "GrpcServer") -> None:
        super().__init__(server)
        self.methods = server.methods

    def new_stream(self, stream_id: int, started: float, send_window: int, receiving: bool) -> Stream:
        """A stream for one call."""
        return GrpcStream(stream_id, started, send_window, receiving=receiving)

    def on_request_head(
        self, stream: Stream, headers: list[tuple[bytes, bytes]] | None, out: list[bytes]
    ) -> None:
        """Check the call's headers: refuse it at once, wait for its message, or start it."""
        assert isinstance(stream, GrpcStream)
        if headers is None:
            message = f"the request's metadata exceeds {self.limits.max_header_bytes} bytes"
            self._respond_block(stream, trailers_only("RESOURCE_EXHAUSTED", message), out)
            return
        head = check_request_headers(headers, self.limits.max_header_count, stream.id)
        stream.head, stream.content_length = head, head.content_length
        refusal = self._refusal(head)
        if isinstance(refusal, tuple):  # not a gRPC call: answered once the request has arrived, as HTTP does
            stream.refusal, stream.discard_body = refusal, True
        elif refusal is not None:  # a gRPC call this server cannot take: Trailers-Only at once
            self._respond_block(stream, refusal, out)
            return
        if not stream.receiving:
            self._request_ended(stream, out)

    def on_request_complete(self, stream: Stream, out: list[bytes]) -> None:
        """Answer a refused request, or start the call."""
        assert isinstance(stream, GrpcStream)
        if stream.refusal is not None:
            self._respond_http(stream, *stream.refusal, out)
        else:
            self._complete(stream, out)

    def on_problem(self, stream: Stream, problem: Problem, out: list[bytes]) -> None:
        """The call ends with the status for ``problem``."""
        if problem is Problem.TOO_LARGE:
            message = f"the message exceeds {self.limits.max_message_bytes} bytes"
        elif problem is Problem.TOO_SLOW:
            message = f"the request message did not arrive within {self.limits.body_timeout} s"
        else:
            message = "server is shutting down; the request did not arrive in time, retry"
        self._respond_block(stream, trailers_only(_PROBLEM_STATUS[problem], message), out)

    def _refusal(self, head: RequestHead) -> bytes | tuple[int, str] | None:
        """Why a request is not a call this server can take (a Trailers-Only block, or an HTTP status and
        reason for a request that is not gRPC at all), else None."""
        if head.method != b"POST":
            return 405, "the gRPC port takes only POST"
        if head.too_many:
            return trailers_only(
                "RESOURCE_EXHAUSTED",
                f"the request has more than {self.limits.max_header_count} header fields",
            )
        if not head.content_type.startswith(b"application/grpc"):
            return 415, "the gRPC port takes only content-type application/grpc"
        if head.route not in self.methods:
            return trailers_only("UNIMPLEMENTED", f"unknown method {head.route[:200]}")
        if head.encoding not in (None, b"identity", b"gzip"):
            return trailers_only(
                "UNIMPLEMENTED", f"grpc-encoding {head.encoding[:40]!r} is not supported",
                ((b"grpc-accept-encoding", SUPPORTED_ENCODINGS),),
            )  # fmt: skip
        return None

    def _complete(self, stream: GrpcStream, out: list[bytes]) -> None:
        """The client has sent the whole request: parse it and start the call."""
        head = stream.head
        assert head is not None
        route = head.route
        parse, handler = self.methods[route]
        try:
            timeout = None if head.timeout is None else parse_timeout(head.timeout)
            message = unframe_message(stream.body, head.encoding, self.limits.max_message_bytes)
            stream.body = bytearray()
            request = _parse(parse, message)
        except RpcError as error:
            self._respond_block(stream, trailers_only(error.code, error.message), out)
            return
        call = Call(route, head.metadata)
        loop = asyncio.get_running_loop()
        stream.task = loop.create_task(self._run(stream, call, handler, request))
        if timeout is not None:
            stream.deadline = loop.call_later(timeout, self._deadline_passed, stream, call)

    def _deadline_passed(self, stream: GrpcStream, call: Call) -> None:
        stream.timed_out = call.timed_out = True
        self.cancel_work(stream)

    async def _run(self, stream: GrpcStream, call: Call, handler: Handler, request: Any) -> None:
        """Run the handler, then answer, unless the call was reset or the connection lost meanwhile."""
        stream.running = True
        if stream.cancel_requested:  # reset, or past its deadline, before this task started
            call.cancelled = True  # the handler records the call and stops (see ``Call.cancelled``)
        block = None
        try:
            response = await handler(request, call)
        except asyncio.CancelledError:  # a RST_STREAM, the deadline, or the connection's end
            reason = "the call's deadline passed" if stream.timed_out else "the call was cancelled"
            block = trailers_only("DEADLINE_EXCEEDED" if stream.timed_out else "CANCELLED", reason)
        except RpcError as error:
            block = trailers_only(error.code, error.message)
        except Exception as error:  # a bug: INTERNAL for the client, the trace for the operator
            traceback.print_exception(error, file=sys.stderr)
            block = trailers_only("INTERNAL", "internal server error")
        stream.task = None
        if stream.deadline is not None:
            stream.deadline.cancel()
        if stream.reset or self._closing:
            self._forget(stream, early=False)
        elif block is None:
            self._respond(stream, response.SerializeToString(), call.trailing)
        else:
            out: list[bytes] = []
            self._respond_block(stream, block, out)
            self._write(out)

    def _respond(self, stream: GrpcStream, payload: bytes, metadata: list[tuple[bytes, bytes]]) -> None:
        out = [frame(FrameType.HEADERS, Flag.END_HEADERS, stream.id, RESPONSE_HEADERS)]
        stream.responding = True
        stream.pending = frame_message(payload)
        stream.trailers = status_trailers("OK", "", tuple(metadata))
        self._send_pending(stream, out)
        if self.owner.draining and not self._announced:
            self.announce_drain(out)
        self._write(out)

    def _respond_http(self, stream: GrpcStream, status: int, reason: str, out: list[bytes]) -> None:
        """A plain HTTP error with a JSON body, for a request that is not a gRPC call."""
        out.append(frame(FrameType.HEADERS, Flag.END_HEADERS, stream.id, http_error_block(status)))
        stream.responding = True
        stream.pending = orjson.dumps({"error": reason})
        self._send_pending(stream, out)


def _parse(parse: Parser, message: bytes) -> Any:
    try:
        return parse(message)
    except Exception as error:  # protobuf's DecodeError, or anything a parser raises on bad bytes
        raise RpcError("INVALID_ARGUMENT", f"the request message does not parse: {error}") from None
