"""Where a control plane keeps its files, and the state file that lets `status` and `down` find a control
plane that `up` started in another process.

The state file is rewritten after each process starts, so even an `up` that dies mid-way leaves enough
behind for `down` to stop what it had started.
"""

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servectl.cluster.pki import Pki
from servectl.cluster.processes import Recorded

STATE_FILE = "cluster.json"
OWNED = (STATE_FILE, "kubeconfig", "pki", "etcd", "logs")
"""Every name `up` creates in the directory: `down` removes these and nothing else."""


class StateError(RuntimeError):
    """A state file that cannot be read; the message names the file and the reason."""


@dataclass(frozen=True)
class Layout:
    """The files of one control plane under its directory."""

    root: Path

    @property
    def state_file(self) -> Path:
        """The recorded URL, kubeconfig and processes."""
        return self.root / STATE_FILE

    @property
    def kubeconfig(self) -> Path:
        """The admin's kubeconfig, the path `up` prints."""
        return self.root / "kubeconfig"

    @property
    def pki(self) -> Pki:
        """Certificates, keys and tokens."""
        return Pki(self.root / "pki")

    @property
    def admin_token(self) -> Path:
        """The admin's token alone, for clients that read a token file."""
        return self.root / "pki" / "admin.token"

    @property
    def controller_manager_kubeconfig(self) -> Path:
        """The controller-manager's own kubeconfig (its token-file identity)."""
        return self.root / "pki" / "controller-manager.kubeconfig"

    @property
    def etcd_data(self) -> Path:
        """etcd's data directory."""
        return self.root / "etcd"

    @property
    def logs(self) -> Path:
        """One log per process."""
        return self.root / "logs"


@dataclass(frozen=True)
class State:
    """What `up` recorded: the API server's URL, the kubeconfig and the processes started so far."""

    url: str
    kubeconfig: Path
    processes: tuple[Recorded, ...]

    def as_json(self) -> dict[str, Any]:
        """The state file's content."""
        return {
            "url": self.url,
            "kubeconfig": str(self.kubeconfig),
            "processes": [p.as_json() for p in self.processes],
        }


def write_state(layout: Layout, state: State) -> None:
    """Replace the state file atomically (a reader never sees half of it)."""
    tmp = layout.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.as_json(), indent=2) + "\n")
    os.replace(tmp, layout.state_file)


def read_state(layout: Layout) -> State | None:
    """The recorded state, None if there is none; `StateError` naming the file if it is unreadable."""
    path = layout.state_file
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        processes = tuple(Recorded.from_json(p) for p in data["processes"])
        return State(str(data["url"]), Path(data["kubeconfig"]), processes)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StateError(f"{path}: unreadable state ({type(error).__name__}: {error})") from error


def remove_state(layout: Layout, keep: tuple[str, ...] = ()) -> None:
    """Delete what `up` created in the directory except `keep`, then the directory if that leaves it
    empty; nothing that `up` did not create."""
    for name in OWNED:
        path = layout.root / name
        if name in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    if layout.root.is_dir() and not any(layout.root.iterdir()):
        layout.root.rmdir()
