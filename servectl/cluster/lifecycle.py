"""`status` and `down` of a control plane that `up` may have started in another process, found through
its state file.

Status follows the LSB init-script convention for exit codes: 0 running, 1 some of it is running or it
does not answer (a pid file without its whole service), 3 stopped. A script can tell "start it" (3) from
"clean it up first" (1).
"""

from dataclasses import dataclass, replace
from pathlib import Path

from servectl.cluster import processes
from servectl.cluster.controlplane import apiserver_ready
from servectl.cluster.processes import Recorded
from servectl.cluster.state import Layout, read_state, remove_state

RUNNING, DEGRADED, STOPPED = "running", "half up", "stopped"
EXIT_CODES = {RUNNING: 0, DEGRADED: 1, STOPPED: 3}


@dataclass(frozen=True)
class Status:
    """What `status` found: the verdict, why, and where the cluster is."""

    state: str
    reason: str
    url: str | None = None
    kubeconfig: Path | None = None
    processes: tuple[tuple[Recorded, bool], ...] = ()

    @property
    def exit_code(self) -> int:
        """0 running, 1 half up, 3 stopped."""
        return EXIT_CODES[self.state]


def status(layout: Layout) -> Status:
    """Running only when every recorded process runs and the API server answers /readyz with `ok`."""
    state = read_state(layout)
    if state is None:
        return Status(STOPPED, f"no control plane recorded in {layout.root}")
    seen = tuple((record, processes.is_running(record)) for record in state.processes)
    found = Status(STOPPED, "", state.url, state.kubeconfig, seen)
    dead = [record.name for record, running in seen if not running]
    if len(dead) == len(seen):
        return replace(found, reason="no recorded process is running")
    if dead:
        return replace(found, state=DEGRADED, reason=f"not running: {', '.join(dead)}")
    token = layout.admin_token.read_text().strip() if layout.admin_token.exists() else ""
    if not apiserver_ready(state.url, layout.pki.serving_cert, token):
        return replace(
            found, state=DEGRADED, reason=f"kube-apiserver does not answer {state.url}/readyz with ok"
        )
    return replace(found, state=RUNNING, reason="every process runs and kube-apiserver is ready")


def down(layout: Layout) -> list[Recorded]:
    """Stop every recorded process (TERM, bounded wait, KILL) and remove the state; the processes that
    survived even SIGKILL (then the state is kept, so `down` can be run again)."""
    state = read_state(layout)
    left = processes.stop(list(state.processes)) if state else []
    if not left:
        remove_state(layout)
    return left
