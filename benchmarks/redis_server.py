"""A real ``redis-server`` on a free loopback port, for the benchmarks of asynchronous inference.

Started as the tests start it (docs/async-inference.md): no RDB snapshots, the append-only file on,
in a directory of its own. ``make setup`` installs Debian's ``redis-server``.
"""

import contextlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks.measures import pinned
from benchmarks.processes import Server, ServerStartError, free_port, start_server, stop_server

REDIS_SERVER = "redis-server"
READY_TIMEOUT_S = 20.0
READY_POLL_S = 0.02


@dataclass(frozen=True, slots=True)
class RedisServer:
    """A started redis-server, its port and a synchronous client of it."""

    server: Server
    port: int
    client: "redis.Redis"

    @property
    def url(self) -> str:
        """The URL a serving process connects with."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        """The process id, to read the CPU Redis spends."""
        return self.server.pid


def redis_command(directory: Path, port: int) -> list[str]:
    """redis-server on 127.0.0.1 only, append-only file on, no snapshots, data in ``directory``."""
    binary = shutil.which(REDIS_SERVER)
    if binary is None:
        raise ServerStartError(
            f"{REDIS_SERVER} is not installed: run `make setup` (it installs redis-server)"
        )
    return [
        binary, "--bind", "127.0.0.1", "--port", str(port), "--protected-mode", "yes", "--save", "",
        "--appendonly", "yes", "--dir", str(directory),
    ]  # fmt: skip


def _wait_for_ping(server: Server, client: "redis.Redis") -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerStartError(
                f"redis-server exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        with contextlib.suppress(redis.ConnectionError):
            if client.ping():
                return
        time.sleep(READY_POLL_S)
    raise ServerStartError(
        f"redis-server did not answer PING in {READY_TIMEOUT_S:.0f} s:\n{server.log_tail()}"
    )


@contextlib.contextmanager
def running_redis(directory: Path, cpus: str | None = None) -> Iterator[RedisServer]:
    """A redis-server answering PING (pinned to ``cpus`` if given), stopped when the block ends."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = start_server("redis", pinned(redis_command(directory, port), cpus), directory, cwd=directory)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30)
    try:
        _wait_for_ping(server, client)
        yield RedisServer(server, port, client)
    finally:
        client.close()
        stop_server(server)
