"""The weights gauge (`serving_variant_weight`): each worker process reports the weights it routes by, at
start and after every SIGHUP reload, so a rollout can tell when a step's weights are in effect everywhere."""

import signal
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.serving_image.conftest import (
    doubler_graph,
    logged_events,
    save_model,
    start_server,
    wait_until,
    write_config,
)


def weights_by_process(base: str) -> dict[str, dict[str, float]]:
    """pid (a single process has none) -> {version: weight} for the doubler, from the server's /metrics."""
    text = requests.get(f"{base}/metrics", timeout=5).text
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "serving_variant_weight" and sample.labels["model"] == "doubler":
                process = sample.labels.get("pid", "single")
                out.setdefault(process, {})[sample.labels["version"]] = sample.value
    return out


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "repository"
    for version in ("1", "2"):
        save_model(doubler_graph(), root / "doubler" / version / "model.onnx")
    write_config(root / "doubler", 'variants:\n  weights: {"1": 95, "2": 5}\n')
    return root


def test_every_worker_reports_the_weights_it_applies_before_and_after_sighup(
    repository: Path, tmp_path: Path
) -> None:
    server = start_server(repository, tmp_path / "logs", "--workers", "2")
    try:
        wait_until(lambda: len(weights_by_process(server.base)) == 2, 20, "both workers report weights")
        before = weights_by_process(server.base)
        assert list(before.values()) == [{"1": 95.0, "2": 5.0}] * 2, f"a series per worker, no sum: {before}"
        write_config(repository / "doubler", 'variants:\n  weights: {"1": 75, "2": 25}\n')
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: len(logged_events(server.stderr(), "config_reloaded")) == 2, 20, server.stderr)
        after = weights_by_process(server.base)
        assert after == {pid: {"1": 75.0, "2": 25.0} for pid in before}, f"both workers applied: {after}"
    finally:
        assert server.stop(timeout=60) == 0, server.stderr()[-2000:]


def test_a_refused_config_leaves_the_weights_in_effect(repository: Path, tmp_path: Path) -> None:
    server = start_server(repository, tmp_path / "logs")
    try:
        write_config(repository / "doubler", 'variants:\n  weights: {"1": 75, "2": 75}\n')  # sums to 150
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: logged_events(server.stderr(), "config_reload_failed"), 20, server.stderr)
        reported = list(weights_by_process(server.base).values())
        assert reported == [{"1": 95.0, "2": 5.0}], f"the old weights still route: {reported}"
    finally:
        assert server.stop(timeout=60) == 0, server.stderr()[-2000:]
