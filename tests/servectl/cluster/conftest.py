"""Helpers for the control plane's tests: the real command run as a subprocess (as a user runs it, so its
processes really are detached from the test), a client built from the kubeconfig it writes, and a scan of
/proc for any process still pointing into a test's directory."""

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from servectl.cluster import kubeconfig
from servectl.experiments.kube import ApiServer

CLI_TIMEOUT = 300.0
"""One `up` on a loaded 2-core machine: etcd 1 s, kube-apiserver 5 to 30 s, CRDs and controller-manager
a few more; the bound is for a hang."""


def servectl(*args: str, whole_cli: bool = False) -> subprocess.CompletedProcess[str]:
    """`servectl cluster ARGS` in a fresh interpreter; its exit code and output. The `cluster` group alone
    unless `whole_cli`: importing every servectl command costs some 7 s a call on a loaded machine."""
    group = ["-c", "from servectl.cluster.command import cluster; cluster()"]
    command = [sys.executable, *(["-m", "servectl", "cluster"] if whole_cli else group), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False)


def client(config: Path, scratch: Path) -> ApiServer:
    """An API client from the kubeconfig alone: its server, CA and token, no kubectl."""
    found = kubeconfig.read(config)
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "ca.crt").write_bytes(found.ca_pem)
    (scratch / "token").write_text(found.token)
    return ApiServer(found.server, scratch / "token", scratch / "ca.crt", timeout=20)


def processes_in(directory: Path) -> list[str]:
    """Command lines of live processes that name `directory` (etcd's data dir, the API server's
    certificates...): after `down` or a failed `up` there must be none."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # exited while we looked
        line = b" ".join(args).decode(errors="replace")
        if str(directory) in line and state != "Z":
            found.append(line)
    return found


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `check` every 0.5 s until it holds; the seconds it took. Fails the test after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout} s")
