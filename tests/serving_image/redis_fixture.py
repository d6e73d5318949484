"""A real ``redis-server`` for the asynchronous inference tests, on a free loopback port.

Started as the brief for issue 16 fixes it: no RDB snapshots, the append-only file on, in a
directory of the test's own. ``make setup`` installs Debian's ``redis-server``; a machine
without it fails these tests, never skips them.
"""

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.serving_image.conftest import free_port

REDIS_SERVER = "redis-server"


@dataclass
class RedisServer:
    """A redis-server process of the tests, and a client of it."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> "redis.Redis":
        """A synchronous client, for the tests' own checks of what is stored."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)

    def log(self) -> str:
        return (self.directory / "redis.log").read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


def start_redis(directory: Path, port: int | None = None) -> RedisServer:
    """Start redis-server on 127.0.0.1 and ``port`` (a free one by default); return once it answers PING.

    Started again on the same directory and port, it reloads its data from the append-only file.
    """
    binary = shutil.which(REDIS_SERVER)
    assert binary is not None, f"{REDIS_SERVER} is not installed: run `make setup` (it installs redis-server)"
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    command = [
        binary, "--bind", "127.0.0.1", "--port", str(port), "--protected-mode", "yes", "--save", "",
        "--appendonly", "yes", "--dir", str(directory), "--logfile", str(directory / "redis.log"),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(process, port, directory)
    client = server.client()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"redis-server exited with {process.returncode}: {server.log()}")
        try:
            if client.ping():
                return server
        except redis.ConnectionError:
            time.sleep(0.02)
    process.kill()
    raise AssertionError(f"redis-server did not answer PING in 20 s: {server.log()}")
