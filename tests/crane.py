"""A real OCI registry on loopback for tests: crane's in-memory registry (`crane registry serve`).

`make setup` builds the pinned crane into .tools/bin; its absence fails a test, never skips it. The server
runs under `timeout`, so it stops by itself even if the test run dies.
"""

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

CRANE = Path(os.environ.get("CRANE_BIN", Path(__file__).resolve().parents[1] / ".tools" / "bin" / "crane"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_registry(crane: Path = CRANE, lifetime_seconds: int = 600) -> Iterator[str]:
    """Yield `127.0.0.1:<port>` of a fresh registry; stop it afterwards."""
    assert crane.is_file(), f"no crane at {crane}: `make setup` builds the pinned crane"
    port = free_port()
    proc = subprocess.Popen(
        ["timeout", str(lifetime_seconds), str(crane), "registry", "serve", "--address", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, "crane registry exited"
                assert time.monotonic() < deadline, "crane registry did not start"
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
