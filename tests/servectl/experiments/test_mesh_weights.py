"""The mesh's confirmation wired into the controller (issue 14 point 2): after a patch the controller reads
the VirtualService back and exports `serving_variant_weight{source="mesh"}` only once Istio reports the
patched generation reconciled, and a step's window, read from a real Prometheus scraping the controller,
begins from that series.

No API server or Istio runs here: the VirtualService comes from the loopback stand-in (`api_server.py`),
which keeps what the patch wrote and writes the status Istio would (its shape is checked against Istio's
schema in test_mesh_status.py). What this proves is the wiring: the gauge follows Istio's account, not the
patch, and `analyze` reads the mesh's series, not the pods'.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from servectl.experiments.controller import IDLE, Controller, Metrics, NoEmitter, serve_metrics
from servectl.experiments.decision import Schedule
from servectl.experiments.kube import ApiServer, VirtualServiceTarget
from servectl.experiments.local_prometheus import free_port, local_prometheus
from servectl.experiments.mesh_weights import SOURCE, MeshWeights
from servectl.experiments.promql import Prometheus
from servectl.experiments.run import Experiment, analyze
from servectl.experiments.window import confirm
from tests.servectl.experiments.api_server import Recorder, reconciled, recording_api, stack_virtual_service

MODEL = "tabular-classifier"


def _service(weights: dict[str, int], state: str | None) -> dict[str, Any]:
    served = stack_virtual_service(weights)
    served["metadata"]["generation"] = 4
    if state is not None:
        served["status"] = reconciled(state, 4)
    return served


def _mesh_sample(registry: CollectorRegistry, version: str) -> float | None:
    return registry.get_sample_value("serving_variant_weight", {"model": MODEL, "version": version,
                                                                "source": SOURCE})  # fmt: skip


def _mesh(api: ApiServer) -> tuple[MeshWeights, CollectorRegistry]:
    registry = CollectorRegistry()
    return MeshWeights(registry, VirtualServiceTarget(api, "payments", MODEL, MODEL)), registry


def test_the_weights_are_exported_only_once_istio_reports_them_reconciled(tmp_path: Path) -> None:
    with recording_api(tmp_path, _service({"1": 90, "2": 10}, "False")) as api:
        mesh, registry = _mesh(api)
        pending = mesh.refresh(since=0.0)
        assert pending.confirmed_at is None and "still applying" in str(pending.reason), pending
        assert _mesh_sample(registry, "1") is None, "nothing is exported before Istio confirms"
        Recorder.vs["status"] = reconciled("True", 4)
        done = mesh.refresh(since=0.0)
    assert done.confirmed_at is not None, done
    assert (_mesh_sample(registry, "1"), _mesh_sample(registry, "2")) == (90.0, 10.0)


def test_without_istios_status_nothing_is_confirmed(tmp_path: Path) -> None:
    with recording_api(tmp_path, _service({"1": 90, "2": 10}, None)) as api:
        mesh, registry = _mesh(api)
        confirmation = mesh.refresh(since=0.0)
    assert "has no Reconciled condition" in str(confirmation.reason), confirmation
    assert _mesh_sample(registry, "1") is None


@contextmanager
def _scraped(metrics: Metrics) -> Iterator[Prometheus]:
    port = free_port()
    server = serve_metrics(metrics.registry, "127.0.0.1", port)
    try:
        with local_prometheus([f"127.0.0.1:{port}"]) as prom:
            prom.wait_for_scrape()
            yield Prometheus(prom.url)
    finally:
        server.shutdown()


def _confirmed_after(prom: Prometheus, weights: dict[str, int], since: float, source: str | None) -> Any:
    time.sleep(2.5)  # two 1 s scrapes after the gauge changed
    return confirm(prom, MODEL, weights, since, time.time(), source)


def test_a_mesh_steps_window_begins_when_the_controller_exports_istios_confirmation(tmp_path: Path) -> None:
    """A failed load-test gate rolls back at the second interval; Istio is still applying the patch, then
    reports it reconciled, and only then does the step's window begin."""
    log_path, metrics = tmp_path / "experiment.jsonl", Metrics(CollectorRegistry())
    with recording_api(tmp_path, _service({"1": 90, "2": 10}, "True")) as api, _scraped(metrics) as prom:
        Recorder.store, Recorder.reconcile = True, "False"
        target = VirtualServiceTarget(api, "payments", MODEL, MODEL)
        experiment = Experiment(prometheus=prom.url, model=MODEL, log_path=log_path, gate_passed=False,
                                schedule=Schedule(settle_seconds=0.0), confirm_source=SOURCE)  # fmt: skip
        controller = Controller(experiment, target, metrics, NoEmitter(), echo=lambda line: None,
                                mesh=MeshWeights(metrics.registry, target))  # fmt: skip
        assert controller.run(1.0, max_analyses=2, sleep=lambda s: None) == ["hold", "rollback"]
        after = {"1": 100, "2": 0}
        waiting = _confirmed_after(prom, after, controller.patched_at, SOURCE)
        assert waiting.confirmed_at is None and "still at v1 90 / v2 10" in str(waiting.reason), waiting
        Recorder.vs["status"] = reconciled("True", Recorder.vs["metadata"]["generation"])
        reconciled_at = time.time()
        assert controller.tick() == IDLE, "the experiment ended; the tick only confirms the mesh"
        done = _confirmed_after(prom, after, controller.patched_at, SOURCE)
        pods = _confirmed_after(prom, after, controller.patched_at, None)
        entry = analyze(experiment, after)
        pods_entry = analyze(replace(experiment, confirm_source=None), after)
    assert done.confirmed_at is not None and done.confirmed_at >= reconciled_at - 1.0, (done, reconciled_at)
    assert pods.confirmed_at is None and "no server reports" in str(pods.reason), "pods' series are apart"
    assert entry["window"]["step_start"] == done.confirmed_at, f"the window begins there: {entry['window']}"
    assert pods_entry["window"]["step_start"] is None, pods_entry["reasons"]
