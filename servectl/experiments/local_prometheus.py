"""A real Prometheus on loopback, scraping local servers, loading the stacks' one rules file.

Debian's `prometheus` package provides the binary (`make setup` installs it). The config is generated into
a temporary directory together with the storage; the process is always stopped on exit.
"""

import json
import shutil
import socket
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from servectl.local_process import running

RULES_FILE = Path(__file__).resolve().parents[2] / "stacks" / "monitoring" / "rules" / "serving-rules.yaml"


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def config(
    targets: Sequence[str], rules: Path, scrape_interval: str, *, alertmanager: str | None = None
) -> dict[str, object]:
    """Prometheus configuration: one job scraping `targets` (host:port) at `/metrics`; alerts sent to
    `alertmanager` (host:port) when given."""
    document: dict[str, object] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": "serving",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": list(targets)}],
            }
        ],
    }
    if alertmanager is not None:
        document["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return document


@dataclass(frozen=True)
class RunningPrometheus:
    """A started Prometheus."""

    url: str
    """Its HTTP API base URL."""
    scrape_interval_seconds: float
    """How often it scrapes."""
    targets: int = 0
    """How many targets it scrapes (0: not known, only those scraped at least once are waited for)."""

    def wait_for_scrape(self, after: float | None = None, timeout: float = 30.0) -> None:
        """Wait until every target has been scraped successfully after `after` (default: now).

        A target not scraped yet has no `up` series at all, so `min(up)` alone would not wait for it: the
        count of targets up must also be all of them."""
        after = time.time() if after is None else after
        expr = f"min(timestamp(up)) and on() count(up == 1) >= {max(self.targets, 1)} and on() min(up) == 1"
        query = urllib.parse.urlencode({"query": expr})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?{query}", timeout=5) as r:  # noqa: S310
                result = json.loads(r.read())["data"]["result"]
            if result and float(result[0]["value"][1]) > after:
                return
            time.sleep(self.scrape_interval_seconds / 4)
        raise TimeoutError(f"Prometheus at {self.url} did not scrape every target within {timeout} s")


@contextmanager
def local_prometheus(
    targets: Sequence[str],
    *,
    rules: Path = RULES_FILE,
    scrape_interval_seconds: float = 1.0,
    log: Path | None = None,
    storage: Path | None = None,
    alertmanager: str | None = None,
) -> Iterator[RunningPrometheus]:
    """Start Prometheus on a free loopback port; yield it once ready; stop it with SIGTERM.

    `storage` is the TSDB directory (default: a fresh one in the temporary directory); pass one to start
    on blocks written beforehand, e.g. by `promtool tsdb create-blocks-from openmetrics`. `alertmanager`
    (host:port) receives the alerts the rules fire.
    """
    binary = shutil.which("prometheus")
    if binary is None:
        raise FileNotFoundError(
            "prometheus is not installed: `make setup` installs Debian's prometheus package"
        )
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="prometheus-") as tmp:
        config_file = Path(tmp) / "prometheus.yml"
        interval = f"{int(scrape_interval_seconds * 1000)}ms"
        data = storage or Path(tmp) / "data"
        config_file.write_text(yaml.safe_dump(config(targets, rules, interval, alertmanager=alertmanager)))
        command = [binary, f"--config.file={config_file}", f"--storage.tsdb.path={data}",
                   f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        with running("prometheus", command, url, log or Path(tmp) / "prometheus.log"):
            yield RunningPrometheus(
                url=url, scrape_interval_seconds=scrape_interval_seconds, targets=len(targets)
            )
