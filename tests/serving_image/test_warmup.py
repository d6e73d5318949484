"""Warm-up before readiness: every batch size the batcher can form has run once through the runtime."""

import asyncio
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from serving_image.dataplane import DataPlane
from serving_image.metrics import Metrics
from serving_image.repository import Repository
from serving_image.runtime import OnnxModel, warm_up_sizes
from tests.serving_image.conftest import (
    assert_frames,
    capped_doubler_graph,
    doubler_graph,
    logged_events,
    save_model,
    start_server,
    wait_until,
    write_config,
)


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """Batch sizes of every ONNX Runtime run, counted at the runtime."""
    counted: Counter[int] = Counter()
    real_run = OnnxModel.run

    def counting_run(self: OnnxModel, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        counted[next(iter(feeds.values())).shape[0]] += 1
        return real_run(self, feeds)

    monkeypatch.setattr(OnnxModel, "run", counting_run)
    return counted


@pytest.mark.parametrize(
    ("max_batch_size", "every_size_up_to", "expected"),
    [
        (8, 64, list(range(1, 9))),
        (0, 64, [1]),
        (100, 64, [*range(1, 65), 100]),
        (1024, 4, [1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 1024]),
        (48, 0, [1, 2, 4, 8, 16, 32, 48]),
    ],
)
def test_warm_up_sizes(max_batch_size: int, every_size_up_to: int, expected: list[int]) -> None:
    assert warm_up_sizes(max_batch_size, every_size_up_to) == expected


def test_every_batch_size_runs_once_before_the_version_is_ready(tmp_path: Path, runs: Counter[int]) -> None:
    save_model(doubler_graph(), tmp_path / "doubler" / "1" / "model.onnx")
    write_config(tmp_path / "doubler", "max_batch_size: 12\n")
    repository = Repository.load(tmp_path, intra_op_threads=1)
    version = repository.models["doubler"].versions["1"]
    assert version.ready and version.warm_up_problem is None
    assert runs == Counter(range(1, 13)), f"each batch size 1..12 must run exactly once, ran {dict(runs)}"
    assert version.runtime is not None and version.runtime.warmed == tuple(range(1, 13))


def test_large_batches_are_warmed_at_powers_of_two(tmp_path: Path, runs: Counter[int]) -> None:
    save_model(doubler_graph(), tmp_path / "doubler" / "1" / "model.onnx")
    write_config(tmp_path / "doubler", "max_batch_size: 300\n")
    Repository.load(tmp_path, intra_op_threads=1, warm_up_every_size_up_to=8)
    assert sorted(runs) == [1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64, 128, 256, 300], dict(runs)
    assert set(runs.values()) == {1}


def test_a_model_that_fails_its_warm_up_still_serves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_run = OnnxModel.run

    def failing_run(self: OnnxModel, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if next(iter(feeds.values())).shape[0] >= 3:
            raise RuntimeError("out of memory\nat batch size 3")
        return real_run(self, feeds)

    monkeypatch.setattr(OnnxModel, "run", failing_run)
    save_model(doubler_graph(), tmp_path / "doubler" / "1" / "model.onnx")
    write_config(tmp_path / "doubler", "max_batch_size: 8\n")
    version = Repository.load(tmp_path, intra_op_threads=1).models["doubler"].versions["1"]
    assert version.ready, "a failed warm-up leaves the model serving, cold"
    problem = version.warm_up_problem
    assert problem == "warm-up at batch size 3 failed: at batch size 3", problem
    assert version.runtime is not None and version.runtime.warmed == (1, 2)


async def start_and_stop(repository: Repository) -> None:
    """A data plane's start, where the batchers' cost probes run, and its stop."""
    dataplane = DataPlane(repository, Metrics())
    await dataplane.start()
    await dataplane.stop()


def test_a_runtime_failure_during_warm_up_is_logged_with_its_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_model(capped_doubler_graph(limit=3), tmp_path / "doubler" / "1" / "model.onnx")
    write_config(tmp_path / "doubler", "max_batch_size: 8\n")
    version = Repository.load(tmp_path, intra_op_threads=1).models["doubler"].versions["1"]
    assert version.ready and version.runtime is not None and version.runtime.warmed == (1, 2)
    (event,) = logged_events(capsys.readouterr().err, "warm_up_failed")
    assert (event["model"], event["version"]) == ("doubler", "1"), event
    assert event["problem"] == version.warm_up_problem, "the event says what the readiness answer says"
    assert event["error_type"] == "InvalidArgument", event
    assert "indices element out of data bounds" in event["error"], event
    traceback = event["traceback"]
    assert traceback.startswith("Traceback (most recent call last):\n"), traceback
    assert_frames(traceback, ("runtime.py", "warm_up"), ("runtime.py", "run"))
    assert traceback.rstrip().endswith(event["error"]), "the traceback ends with the error it explains"


def test_the_batchers_cost_probe_logs_its_failure_with_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    save_model(doubler_graph(), tmp_path / "repository" / "doubler" / "1" / "model.onnx")
    repository = Repository.load(tmp_path / "repository", intra_op_threads=1)
    runtime = repository.models["doubler"].versions["1"].runtime
    assert runtime is not None and 1 in runtime.warmed, "the warm-up itself passed"
    # The session breaks after the repository's warm-up: a real session that fails at one row.
    save_model(capped_doubler_graph(limit=1), tmp_path / "broken" / "model.onnx")
    monkeypatch.setattr(runtime, "run", OnnxModel(tmp_path / "broken" / "model.onnx", 1).run)
    capsys.readouterr()
    asyncio.run(start_and_stop(repository))
    (event,) = logged_events(capsys.readouterr().err, "warm_up_failed")
    assert event["problem"] == "the batcher's cost probe failed" and event["error_type"] == "InvalidArgument"
    assert_frames(event["traceback"], ("dataplane.py", "_warm_up"), ("runtime.py", "run"))


def test_a_warm_up_failure_is_logged_once_not_again_by_the_cost_probe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_model(capped_doubler_graph(limit=1), tmp_path / "doubler" / "1" / "model.onnx")
    repository = Repository.load(tmp_path, intra_op_threads=1)
    asyncio.run(start_and_stop(repository))
    events = logged_events(capsys.readouterr().err, "warm_up_failed")
    assert [e["problem"].split(":")[0] for e in events] == ["warm-up at batch size 1 failed"], events


def test_workers_listen_only_once_all_of_them_are_warm(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    save_model(doubler_graph(), repository / "doubler" / "1" / "model.onnx")
    write_config(repository / "doubler", "max_batch_size: 16\n")
    server = start_server(repository, tmp_path / "logs", "--workers", "2")
    try:
        # The port answers a moment before the line saying so is written: wait for the line, bounded.
        wait_until(lambda: logged_events(server.stderr(), "server_started"), 10, "no server_started event")
        log = server.stderr()
        warm = [index for index, line in enumerate(log.splitlines()) if '"event":"worker_warm"' in line]
        started = [index for index, line in enumerate(log.splitlines()) if '"event":"server_started"' in line]
        assert len(warm) == 2 and started, log
        assert max(warm) < min(started), "a worker listened before its sibling had warmed up"
        assert log.count('"event":"model_warmed_up"') == 2 and '"batch_sizes":16' in log, log
    finally:
        assert server.stop() == 0
