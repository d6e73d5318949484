"""A real Alertmanager on loopback (Debian's `prometheus-alertmanager`, which `make setup` installs), for
the tests and the local loop: started on a free port with a given config, stopped on exit.
"""

import json
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from servectl.experiments.local_prometheus import free_port
from servectl.local_process import running

BINARIES = ("prometheus-alertmanager", "alertmanager")
"""Debian's name first, then upstream's."""


@dataclass(frozen=True)
class RunningAlertmanager:
    """A started Alertmanager."""

    url: str
    """Its base URL."""

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """Send alerts as Prometheus does, through the v2 API (`POST /api/v2/alerts`)."""
        request = urllib.request.Request(  # noqa: S310 - loopback
            f"{self.url}/api/v2/alerts",
            data=json.dumps(list(alerts)).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            if response.status != 200:
                raise RuntimeError(f"Alertmanager at {self.url} answered {response.status} to the alerts")


@contextmanager
def local_alertmanager(config: Mapping[str, Any], log: Path | None = None) -> Iterator[RunningAlertmanager]:
    """Start Alertmanager with `config` on a free loopback port, clustering off; yield it once ready."""
    binary = next((b for b in map(shutil.which, BINARIES) if b), None)
    if binary is None:
        raise FileNotFoundError(
            "alertmanager is not installed: `make setup` installs Debian's prometheus-alertmanager package"
        )
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="alertmanager-") as tmp:
        config_file = Path(tmp) / "alertmanager.yml"
        config_file.write_text(yaml.safe_dump(dict(config)))
        command = [
            binary,
            f"--config.file={config_file}",
            f"--storage.path={tmp}/data",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # one instance, no gossip port
            "--log.level=debug",
        ]
        url = f"http://127.0.0.1:{port}"
        with running("alertmanager", command, url, log or Path(tmp) / "alertmanager.log"):
            yield RunningAlertmanager(url=url)
