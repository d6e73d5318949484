"""Start the servers under test, wait until they are ready, stop them; free ports and memory readings."""

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

READY_POLL_S = 0.2


class ServerStartError(Exception):
    """A server exited or never became ready; the message carries the tail of its log."""


@dataclass(frozen=True, slots=True)
class Server:
    """A server process this benchmark started, in its own process group."""

    name: str
    process: "subprocess.Popen[bytes]"
    log_path: Path

    @property
    def pid(self) -> int:
        """The process id of the server's main process."""
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the server wrote, to explain a failure."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(
    name: str, command: Sequence[str], log_dir: Path, cwd: Path, env: Mapping[str, str] | None = None
) -> Server:
    """Start ``command`` with its output in ``log_dir/<name>.log``."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        # A new session makes the server a process-group leader, so a stuck server and its
        # workers can be killed together by this one id, and Ctrl-C in the terminal reaches only us.
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name, process, log_path)


def _answers_200(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def wait_ready(server: Server, url: str, timeout_s: float, context: ssl.SSLContext | None = None) -> None:
    """Poll ``url`` until it answers 200; stop the server and raise if it exits or the time runs out.

    ``context`` is the TLS client context for an ``https`` URL (trusting the server's CA).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            code = server.process.returncode
            raise ServerStartError(
                f"{server.name} exited with {code} before it was ready:\n{server.log_tail()}"
            )
        if _answers_200(url, context):
            return
        time.sleep(READY_POLL_S)
    stop_server(server)
    raise ServerStartError(f"{server.name} was not ready within {timeout_s:.0f} s:\n{server.log_tail()}")


def stop_server(server: Server, timeout_s: float = 30.0) -> None:
    """SIGTERM the server and wait; SIGKILL its process group if it overruns or leaves workers behind."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=timeout_s)
    # The group id is the server's own pid (see start_server), so this reaches nothing else.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.pid, signal.SIGKILL)
    server.process.wait(timeout=10)


@contextlib.contextmanager
def running_server(
    name: str,
    command: Sequence[str],
    ready_url: str,
    *,
    log_dir: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 90.0,
    context: ssl.SSLContext | None = None,
) -> Iterator[Server]:
    """A started, ready server that is stopped when the block ends, however it ends."""
    server = start_server(name, command, log_dir, cwd, env)
    try:
        wait_ready(server, ready_url, timeout_s, context)
        yield server
    finally:
        stop_server(server)


def _parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    # The command name in brackets may hold spaces; the fields after its closing bracket do not.
    return int(stat.rsplit(")", 1)[1].split()[1])


def _rss_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (a server may serve from child processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _parent_pid(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(children.get(current, []))
    return found


def tree_rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` plus all its descendants, in KiB (a server may load models in a child)."""
    return sum(_rss_kib(current) for current in _descendants(pid))


def _cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def tree_cpu_seconds(pid: int) -> float:
    """User and system CPU seconds used so far by ``pid`` and its descendants (all their threads)."""
    return sum(_cpu_seconds(current) for current in _descendants(pid))
