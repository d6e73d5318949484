"""Run and query OPA: a local `opa run --server` on 127.0.0.1, or one named by URL.

The rules live in this directory; the server loads every rule package and the data in
``data/`` (the ``*_test.rego`` files stay out), plus any organisation override files.
All traffic goes through opa-python-client.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opa_client import OpaClient
from opa_client.errors import ConnectionsError

POLICY_DIR = Path(__file__).resolve().parent
REPO_DIR = POLICY_DIR.parent
DEFAULT_OPA = REPO_DIR / ".tools" / "bin" / "opa"
# Directories under POLICY_DIR that hold no Rego rules or data for the server.
_NOT_REGO = frozenset({"pack", "__pycache__", ".regal"})
GATE_PACKAGE = "gate.report"
GATE_RULE = "result"


class OpaError(RuntimeError):
    """OPA is missing, would not start, or could not answer; the message says what to do."""


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
    # Linux: the server gets SIGTERM if this process dies, even by SIGKILL.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


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


@contextlib.contextmanager
def local_server(
    opa: Path | None = None, extra_data: Sequence[Path] = (), ready_timeout: float = 20.0
) -> Iterator[Endpoint]:
    """Start `opa run --server` on 127.0.0.1 and a free port; always stop it on the way out."""
    binary = find_opa(opa)
    port = free_port()
    proc = subprocess.Popen(
        server_command(binary, port, extra_data),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
    )
    try:
        endpoint = Endpoint(host="127.0.0.1", port=port)
        _wait_ready(endpoint, proc, ready_timeout)
        yield endpoint
    finally:
        _stop(proc)


def _wait_ready(endpoint: Endpoint, proc: subprocess.Popen[bytes], timeout: float) -> None:
    with OpaClient(host=endpoint.host, port=endpoint.port, timeout=1.0, retries=0) as client:
        try:
            client.wait_for_ready(timeout=timeout, interval=0.05)
        except ConnectionsError as err:
            raise OpaError(f"OPA did not become ready on port {endpoint.port}: {_stderr(proc)}") from err
    if proc.poll() is not None:
        raise OpaError(f"OPA exited with {proc.returncode}: {_stderr(proc)}")


def _stderr(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None or proc.stderr is None:
        return "still starting"
    return proc.stderr.read().decode(errors="replace").strip()[-2000:] or f"exit code {proc.returncode}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


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
            raise OpaError(f"OPA could not evaluate {GATE_PACKAGE}.{GATE_RULE}: {err}") from err
        result = answer.get("result") if isinstance(answer, dict) else None
        if not isinstance(result, dict) or "findings" not in result:
            raise OpaError(
                f"OPA returned no {GATE_PACKAGE}.{GATE_RULE}: is this server loaded with policies/?"
            )
        return result
