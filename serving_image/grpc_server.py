"""The gRPC listener: unary gRPC calls over HTTP/2, on the same event loop as REST.

Why not grpc.aio: measured with ghz on this image's models, grpc.aio spent about 240 us of CPU on
each call before the handler ran (a poller thread hands each event to the loop, and every call
crosses Cython and asyncio futures several times), more than a whole REST request. The
protocol's six RPCs are unary, so the server needs only a small part of HTTP/2
(``serving_image.http2_connection``, ``serving_image.grpc_connection``); ``benchmarks/transport.py``
measures both protocols on one server.

This module holds what spans connections: the connection cap (the longest-idle connection makes
room for a new one), the drain (GOAWAY, then the final GOAWAY, then close) and the cut-off for
calls still sending their message when the grace period ends.
"""

import asyncio
import socket
import ssl
from collections.abc import Mapping

from serving_image.grpc_connection import GrpcConnection
from serving_image.grpc_wire import Handler, Parser
from serving_image.http2_connection import ConnectionLimits, Http2Connection
from serving_image.http2_frames import ErrorCode


class GrpcServer:
    """The listener, its connections, the method table, and the drain."""

    def __init__(self, methods: Mapping[str, tuple[Parser, Handler]], limits: ConnectionLimits) -> None:
        self.methods = methods
        self.limits = limits
        self.connections: set[Http2Connection] = set()
        self.draining = False
        self.closing = False
        self._listener: asyncio.Server | None = None
        self._closed = asyncio.Event()
        self._closed.set()

    async def start(
        self, sock: socket.socket, ssl_context: ssl.SSLContext | None = None, handshake_timeout: float = 10.0
    ) -> int:
        """Serve on ``sock`` (TLS when ``ssl_context`` is given, with the handshake bounded); the port."""
        loop = asyncio.get_running_loop()
        if ssl_context is None:
            self._listener = await loop.create_server(lambda: GrpcConnection(self), sock=sock)
        else:
            self._listener = await loop.create_server(
                lambda: GrpcConnection(self), sock=sock, ssl=ssl_context,
                ssl_handshake_timeout=handshake_timeout, ssl_shutdown_timeout=1.0,
            )  # fmt: skip
        return int(sock.getsockname()[1])

    def admit(self, connection: Http2Connection) -> bool:
        """Count a new connection; at the cap, close the longest-idle one, or refuse this one."""
        if len(self.connections) >= self.limits.max_connections:
            idle = [c for c in self.connections if not c.streams]
            if not idle:
                return False
            min(idle, key=lambda c: c.last_active).close_with(ErrorCode.NO_ERROR, "connection limit reached")
        self.connections.add(connection)
        self._closed.clear()
        return True

    def forget(self, connection: Http2Connection) -> None:
        """A connection has ended."""
        self.connections.discard(connection)
        if not self.connections:
            self._closed.set()

    def start_draining(self) -> None:
        """Ask every client to open no new calls here (GOAWAY with the highest id, then a PING)."""
        self.draining = True
        for connection in list(self.connections):
            connection.announce_drain()

    def close(self) -> None:
        """Stop accepting, send the final GOAWAY, and end each connection when its calls are done."""
        self.closing = True
        if self._listener is not None:
            self._listener.close()
        for connection in list(self.connections):
            connection.finish()

    async def wait_closed(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the connections to end; then close what is left."""
        try:
            await asyncio.wait_for(self._closed.wait(), timeout)
        except TimeoutError:
            for connection in list(self.connections):
                connection.close_with(ErrorCode.NO_ERROR, "the server is shutting down")

    def cut_slow_bodies(self) -> int:
        """UNAVAILABLE for every call still sending its message; how many there were."""
        return sum(connection.cut_receiving() for connection in list(self.connections))
