"""A local server binary (Prometheus, Alertmanager) run on loopback for tests and the demo: started, waited
for until its ``/-/ready`` answers 200, and stopped with SIGTERM (killed if it does not exit in 30 s)."""

import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


@contextmanager
def running(name: str, command: Sequence[str], url: str, log: Path) -> Iterator[None]:
    """Run ``command`` (stderr to ``log``) until the block ends, once ``url``'s ``/-/ready`` says so."""
    with log.open("wb") as err:
        process = subprocess.Popen(list(command), stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_ready(name, url, process)
            yield
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_ready(
    name: str, url: str, process: subprocess.Popen[bytes], timeout: float = READY_TIMEOUT_S
) -> None:
    """Poll ``url``'s ``/-/ready`` until 200; an exit or the timeout is an error naming ``name``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:  # noqa: S310 - loopback
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{name} at {url} was not ready within {timeout} s")
