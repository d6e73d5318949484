"""Run and query OPA: a local `opa run --server` on 127.0.0.1, or one named by URL.

The rules live in this directory; the server loads every rule package and the data in
``data/`` (the ``*_test.rego`` files stay out), plus any organisation override files.
All traffic goes through opa-python-client.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from opa_client import OpaClient

POLICY_DIR = Path(__file__).resolve().parent
REPO_DIR = POLICY_DIR.parent
DEFAULT_OPA = REPO_DIR / ".tools" / "bin" / "opa"
# Directories under POLICY_DIR that hold no Rego rules or data for the server.
_NOT_REGO = frozenset({"pack", "__pycache__", ".regal"})
GATE_PACKAGE = "gate.report"
GATE_RULE = "result"
OUTPUT_LIMIT = 2000
"""How much of OPA's own output an error carries: its last bytes printed, the first of an HTTP answer."""


class OpaError(RuntimeError):
    """OPA is missing, would not start or could not answer; one line saying what to do, or what OPA said."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output
        """What the local OPA printed on stdout and stderr (bounded), line by line as it printed it."""


def one_line(text: str) -> str:
    """OPA's output on one line: lines joined by " | ", runs of spaces collapsed.

    Lines of only carets go: they point into the line above, which one line cannot show.
    """
    lines = (" ".join(line.split()) for line in text.splitlines())
    return " | ".join(line for line in lines if line.strip("^ "))


def find_opa(explicit: Path | None = None) -> Path:
    """The OPA binary: explicit, else $OPA_BIN, else the project's .tools/bin/opa."""
    candidate = explicit or Path(os.environ.get("OPA_BIN", DEFAULT_OPA))
    if not (candidate.is_file() and os.access(candidate, os.X_OK)):
        raise OpaError(f"OPA not found at {candidate}: run `make setup` (or pass --opa-url)")
    return candidate


def policy_paths(policy_dir: Path = POLICY_DIR) -> list[Path]:
    """The directories the server loads: every rule package directory, and data/."""
    return sorted(p for p in policy_dir.iterdir() if p.is_dir() and p.name not in _NOT_REGO)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    # Linux: the server gets SIGTERM if this process dies, even by SIGKILL. prctl(1, sig) is
    # PR_SET_PDEATHSIG; without libc or prctl the server starts all the same.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)


def server_command(opa: Path, port: int, extra_data: Sequence[Path] = ()) -> list[str]:
    """The `opa run --server` command line for the rules, the data and any override files."""
    data_root = POLICY_DIR / "data"
    loaded = [str(p) for p in policy_paths() if p != data_root]
    return [
        str(opa),
        "run",
        "--server",
        "--addr",
        f"127.0.0.1:{port}",
        "--log-level",
        "error",
        "--ignore",
        "*_test.rego",
        # Files loaded from the root of a path land at the root of data: data.jurisdictions, ...
        str(data_root),
        *loaded,
        *(str(p) for p in extra_data),
    ]


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """Where an OPA server answers."""

    host: str
    """Host name or address."""
    port: int
    """TCP port."""
    ssl: bool = False
    """Whether to speak HTTPS."""

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """An endpoint from http(s)://host:port; raise ValueError for anything else."""
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"--opa-url {url!r} is not http(s)://HOST[:PORT]")
        return cls(host=parts.hostname, port=parts.port or 8181, ssl=parts.scheme == "https")


class _OutputTail:
    """The last OUTPUT_LIMIT bytes a process writes to a pipe, drained by a thread so the pipe never fills."""

    def __init__(self, stream: IO[bytes], limit: int = OUTPUT_LIMIT) -> None:
        self._stream = stream
        self._limit = limit
        self._tail = bytearray()
        self._dropped = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._drain, name="opa-output", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        fd = self._stream.fileno()
        while chunk := os.read(fd, 4096):
            with self._lock:
                self._tail += chunk
                if len(self._tail) > self._limit:
                    del self._tail[: -self._limit]
                    self._dropped = True

    def text(self) -> str:
        """All the process printed (its last bytes), once it has ended and the pipe is read to its end."""
        self._thread.join(timeout=5)
        with self._lock:
            text = self._tail.decode(errors="replace").strip()
            return f"...{text}" if self._dropped else text

    def close(self) -> None:
        """Close the pipe once the reader has seen its end (never under a reader still blocked in it)."""
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._stream.close()


def _exit_status(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-returncode).name}"
    return f"code {returncode}"


def _printed(output: _OutputTail) -> tuple[str, str]:
    """What the ended OPA printed: (one line for a message, the text as printed)."""
    text = output.text()
    return f"it printed: {one_line(text)}" if text else "it printed nothing", text


@contextlib.contextmanager
def local_server(
    opa: Path | None = None, extra_data: Sequence[Path] = (), ready_timeout: float = 20.0
) -> Iterator[Endpoint]:
    """Start `opa run --server` on 127.0.0.1 and a free port; always stop it on the way out.

    OPA's stdout and stderr are kept (bounded), and an OpaError carries them when OPA will not
    start, or when a query fails because OPA has exited.
    """
    binary = find_opa(opa)
    port = free_port()
    proc = subprocess.Popen(
        server_command(binary, port, extra_data),
        stdin=subprocess.DEVNULL,
        # OPA prints load errors on stdout and crashes on stderr: keep both, in order.
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
    )
    assert proc.stdout is not None, "stdout=PIPE gives a stream"
    output = _OutputTail(proc.stdout)
    try:
        endpoint = Endpoint(host="127.0.0.1", port=port)
        _wait_ready(endpoint, proc, output, ready_timeout)
        try:
            yield endpoint
        except OpaError as err:
            if not _exited(proc):
                raise
            summary, text = _printed(output)
            raise OpaError(
                f"{err} (the local OPA had exited with {_exit_status(proc.returncode)}; {summary})", text
            ) from err
    finally:
        _stop(proc)
        output.close()


def _exited(proc: subprocess.Popen[bytes], grace: float = 0.1) -> bool:
    # A refused connection can be seen a moment before the dead server can be reaped.
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        return False
    return True


def _readiness_client(endpoint: Endpoint) -> OpaClient:
    """The readiness wait's client: one request per health check, given up after a second, so that
    between checks the wait sees a server that has exited or a deadline that has passed."""
    return OpaClient(host=endpoint.host, port=endpoint.port, timeout=1.0, retries=0)


def _await_ready(
    healthy: Callable[[], bool],
    exited: Callable[[], bool],
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Check `healthy` until it holds or `exited` does; False if `clock` reaches `deadline` first."""
    while not healthy():
        if exited():
            return True
        if clock() >= deadline:
            return False
    return True


def _wait_ready(
    endpoint: Endpoint, proc: subprocess.Popen[bytes], output: _OutputTail, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    with _readiness_client(endpoint) as client:
        # Waiting on the process between health checks: a server that cannot load exits at once.
        in_time = _await_ready(client.check_health, lambda: _exited(proc, grace=0.05), deadline)
    if not in_time:
        _stop(proc)  # so that all it printed can be read to the end
        summary, text = _printed(output)
        raise OpaError(
            f"OPA did not become ready on port {endpoint.port} within {timeout:g}s; {summary}", text
        )
    if proc.poll() is not None:
        summary, text = _printed(output)
        status = _exit_status(proc.returncode)
        raise OpaError(f"OPA exited with {status} before it was ready; {summary}", text)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Gate:
    """Asks an OPA server for the gate's result on normalized plans."""

    def __init__(self, endpoint: Endpoint, timeout: float = 60.0) -> None:
        self._client = OpaClient(host=endpoint.host, port=endpoint.port, ssl=endpoint.ssl, timeout=timeout)

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *_: object) -> None:
        self._client.close_connection()

    def evaluate(self, plan_input: dict[str, Any]) -> dict[str, Any]:
        """The gate's ``{"findings": [...], "summary": {...}}`` for one normalized plan."""
        try:
            answer = self._client.query_rule(
                input_data=plan_input, package_path=GATE_PACKAGE, rule_name=GATE_RULE
            )
        except Exception as err:  # requests' errors, whatever the transport raised
            raise OpaError(f"OPA could not evaluate {GATE_PACKAGE}.{GATE_RULE}: {_described(err)}") from err
        result = answer.get("result") if isinstance(answer, dict) else None
        if not isinstance(result, dict) or "findings" not in result:
            raise OpaError(
                f"OPA returned no {GATE_PACKAGE}.{GATE_RULE}: is this server loaded with policies/?"
            )
        return result


def _described(err: Exception) -> str:
    """The error, and OPA's own answer when it answered with an HTTP error: that says what went wrong."""
    response = getattr(err, "response", None)
    body = str(getattr(response, "text", "") or "") if response is not None else ""
    if not body:
        return str(err)
    try:
        # OPA pretty-prints its error documents; compact JSON keeps one line and every field.
        answer = json.dumps(json.loads(body))
    except ValueError:
        answer = one_line(body)
    shown = answer if len(answer) <= OUTPUT_LIMIT else f"{answer[:OUTPUT_LIMIT]}..."
    return f"{err}; OPA answered: {shown}"
