"""Real processes for the experiment tests: the serving image on loopback with a model repository made for the
test, and a real Prometheus scraping it. Both are always stopped."""

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.serving_image.conftest import start_server

BUNDLED = Path(__file__).resolve().parents[3] / "serving_image" / "models" / "tabular-classifier"
MODEL = "tabular-classifier"


@dataclass(frozen=True)
class Server:
    """A running server."""

    url: str
    process: subprocess.Popen[bytes]
    repository: Path
    stderr: Path

    @property
    def config(self) -> Path:
        """The model's config.yaml."""
        return self.repository / MODEL / "config.yaml"

    def wait_for_event(self, event: str, count: int = 1, timeout: float = 20.0) -> None:
        """Wait until the server has logged `event` on stderr `count` times."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stderr.read_text().count(f'"event":"{event}"') >= count:
                return
            time.sleep(0.05)
        raise TimeoutError(f"no {event} in {self.stderr}:\n{self.stderr.read_text()[-2000:]}")


def make_repository(root: Path, config: str) -> Path:
    """A model repository with the bundled classifier's versions 1 and 2 and the given config.yaml."""
    assert (BUNDLED / "2" / "model.onnx").exists(), "bundled models missing: run `make models`"
    repository = root / "models"
    for version in ("1", "2"):
        shutil.copytree(BUNDLED / version, repository / MODEL / version)
    (repository / MODEL / "config.yaml").write_text(config)
    return repository


@contextmanager
def running_server(repository: Path, logs: Path) -> Iterator[Server]:
    """The serving image on free loopback ports, ready; stopped with SIGTERM, which must exit 0."""
    started = start_server(repository, logs)
    try:
        yield Server(started.base, started.process, repository, logs / "stderr.log")
    finally:
        code = started.stop(timeout=60)
        assert code == 0, f"server exited {code}: {started.stderr()[-2000:]}"


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """Where a test's processes write their logs."""
    path = tmp_path / "logs"
    path.mkdir()
    return path
