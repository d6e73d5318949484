"""Shadow traffic in-process: a real repository and data plane, the mirror called directly.

test_shadow.py proves the same through a server process; these tests call ``ShadowTraffic``
in the test process, so each rule (which requests are mirrored, how a copy's outcome and
latency are counted, how a failed copy is logged) is proved where a fault in it shows.
The copies go to the data plane in-process: the shadow sender has no network peer.
"""

import asyncio
import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest

from serving_image.assignment import WEIGHTED
from serving_image.dataplane import DataPlane, Target
from serving_image.metrics import Metrics
from serving_image.model_config import ShadowConfig, VariantsConfig
from serving_image.repository import Repository
from serving_image.shadow import ShadowTraffic
from serving_image.tensors import InferRequest, InputTensor
from serving_image.variants import VariantRouter
from tests.serving_image.conftest import (
    capped_doubler_graph,
    doubler_graph,
    logged_events,
    save_model,
    write_config,
)

MIRROR_ALL = 'max_batch_size: 8\nvariants:\n  weights: {"1": 100}\n  shadow: {version: "2", percent: 100}\n'
REQUEST = InferRequest(
    model="doubler",
    version=None,
    inputs=[InputTensor("x", "FP32", (1, 4), np.array([[1, 2, 3, 4]], dtype=np.float32))],
)


def repository(tmp_path: Path, shadow_graph: onnx.GraphProto | None = None) -> Repository:
    """Model "doubler" mirroring all of version 1's traffic to version 2, ``shadow_graph`` (a doubler)."""
    save_model(doubler_graph(), tmp_path / "doubler" / "1" / "model.onnx")
    save_model(shadow_graph or doubler_graph(), tmp_path / "doubler" / "2" / "model.onnx")
    write_config(tmp_path / "doubler", MIRROR_ALL)
    return Repository.load(tmp_path, intra_op_threads=1)


@dataclass(frozen=True)
class Mirrored:
    """What one round of ``mirror`` calls did."""

    started: int
    """Tasks the calls started."""
    pending_at_once: int
    """``pending`` right after the calls returned, before any copy ran."""
    counted_at_once: float
    """Shadow requests counted right after the calls returned."""
    pending_after: int
    """``pending`` once every copy finished."""
    seconds: float
    """Wall time from the first call to the last copy's end."""
    metrics: Metrics


def shadow_count(metrics: Metrics, version: str = "2", outcome: str = "success") -> float:
    # The copy keeps the live request's assignment (weighted here).
    labels = {
        "model": "doubler",
        "version": version,
        "protocol": "shadow",
        "assignment": "weighted",
        "segment": "other",
    }
    return metrics.registry.get_sample_value("serving_requests_total", labels | {"outcome": outcome}) or 0.0


def shadow_latency(metrics: Metrics, version: str = "2", kind: str = "success") -> tuple[float, float]:
    """The count and sum of the shadow latency histogram, for successes or failures (`kind`)."""
    labels = {"model": "doubler", "version": version, "protocol": "shadow", "outcome_class": kind}
    count = metrics.registry.get_sample_value("serving_request_duration_seconds_count", labels)
    total = metrics.registry.get_sample_value("serving_request_duration_seconds_sum", labels)
    return count or 0.0, total or 0.0


def mirror(repo: Repository, served: str, copies: int = 1) -> Mirrored:
    """Mirror ``copies`` requests served by ``served`` and wait for every copy the calls started."""

    async def run() -> Mirrored:
        dataplane = DataPlane(repo, Metrics())
        await dataplane.start()
        try:
            shadow = ShadowTraffic(dataplane)
            model = repo.models["doubler"]
            before = asyncio.all_tasks()
            began = time.perf_counter()
            for _ in range(copies):
                shadow.mirror(Target(model, model.versions[served], WEIGHTED), REQUEST)
            started = asyncio.all_tasks() - before
            pending, counted = shadow.pending, shadow_count(dataplane.metrics)
            await asyncio.gather(*started)
            seconds = time.perf_counter() - began
            return Mirrored(len(started), pending, counted, shadow.pending, seconds, dataplane.metrics)
        finally:
            await dataplane.stop()

    return asyncio.run(run())


def test_each_request_is_copied_to_the_shadow_version_without_waiting_for_it(tmp_path: Path) -> None:
    got = mirror(repository(tmp_path), served="1", copies=3)
    assert got.started == 3, f"one task per mirrored request, got {got.started}"
    assert (got.pending_at_once, got.counted_at_once) == (3, 0), "mirror returns before any copy ran"
    assert got.pending_after == 0, "a finished copy is no longer pending"
    assert shadow_count(got.metrics) == 3, "every copy is counted as a shadow success of version 2"
    count, total = shadow_latency(got.metrics)
    assert count == 3, f"every copy's latency is observed, got {count}"
    assert 0 < total <= 3 * got.seconds, f"latencies {total} s must lie within the {got.seconds} s it took"
    assert shadow_count(got.metrics, version="1") == 0, "the served version gets no shadow copy"


def no_router(repo: Repository) -> None:
    repo.models["doubler"].router = None


def no_shadow(repo: Repository) -> None:
    repo.models["doubler"].router = VariantRouter(VariantsConfig(weights={"1": 100}), default_version="2")


def shadow_without_directory(repo: Repository) -> None:
    config = VariantsConfig(weights={"1": 100}, shadow=ShadowConfig(version="3", percent=100))
    repo.models["doubler"].router = VariantRouter(config, default_version="2")


def shadow_not_loaded(repo: Repository) -> None:
    versions = repo.models["doubler"].versions
    versions["2"] = dataclasses.replace(versions["2"], runtime=None, error="model.onnx: failed to load")


@pytest.mark.parametrize(
    ("served", "change"),
    [
        ("1", no_router),
        ("1", no_shadow),
        ("2", lambda repo: None),  # the shadow version itself served the request
        ("1", shadow_without_directory),
        ("1", shadow_not_loaded),
    ],
    ids=["no router", "no shadow", "served by the shadow", "shadow has no directory", "shadow not loaded"],
)
def test_no_copy_is_made_when_there_is_no_ready_shadow_to_send_it_to(
    tmp_path: Path, served: str, change: Callable[[Repository], None]
) -> None:
    repo = repository(tmp_path)
    change(repo)
    got = mirror(repo, served=served)
    assert (got.started, got.pending_at_once) == (0, 0), "no task is started"
    samples = [
        s for m in got.metrics.registry.collect() for s in m.samples if s.labels.get("protocol") == "shadow"
    ]
    assert samples == [], f"nothing is counted as shadow traffic: {samples}"


def test_a_copy_the_shadow_refuses_is_counted_with_the_refusal_and_not_logged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    got = mirror(
        repository(tmp_path, shadow_graph=doubler_graph(width=3)), served="1"
    )  # takes 3 values, not 4
    assert shadow_count(got.metrics, outcome="client_error") == 1, "the copy's InvalidInput is a client error"
    assert shadow_count(got.metrics) == 0, "a refused copy is no success"
    assert shadow_latency(got.metrics, kind="failure")[0] == 1, "its latency is observed too"
    assert got.pending_after == 0
    assert logged_events(capsys.readouterr().err, "shadow_failed") == [], "a refusal is an answer, not a bug"


def test_a_copy_that_fails_in_the_runtime_is_counted_and_logged_with_its_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = repository(tmp_path, shadow_graph=capped_doubler_graph(limit=1))  # fails at every batch size
    capsys.readouterr()
    got = mirror(repo, served="1", copies=2)
    assert shadow_count(got.metrics, outcome="server_error") == 2, "each failed copy is a server error"
    assert shadow_latency(got.metrics, kind="failure")[0] == 2, "a failed copy's latency is observed too"
    assert got.pending_after == 0
    events = logged_events(capsys.readouterr().err, "shadow_failed")
    assert len(events) == 2, f"one event per failed copy: {events}"
    for event in events:
        assert (event["model"], event["version"], event["error_type"]) == (
            "doubler",
            "2",
            "InvalidArgument",
        ), event
        assert "indices element out of data bounds" in event["error"], event
        traceback = event["traceback"]
        assert traceback.startswith("Traceback (most recent call last):\n"), traceback
        # The frames of shadow.py (whatever its function is called) down to the runtime that raised.
        assert re.search(r'File "[^"]*serving_image/shadow\.py", line \d+, in ', traceback), traceback
        assert re.search(r'File "[^"]*serving_image/runtime\.py", line \d+, in run\n', traceback), traceback
