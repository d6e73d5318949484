"""The mesh's confirmation wired into the controller (issue 14 point 2): after a patch the controller reads
the VirtualService back and exports `serving_variant_weight{source="mesh"}` only once Istio reports the
patched generation reconciled, and a step's window, read from a real Prometheus scraping the controller,
begins from that series.

The VirtualService lives in a real kube-apiserver (the session's `cluster`, tests/kube_api.py) with the
Istio CRDs; the controller reads and patches it with its own token, under the Role the stack builds. Istio
cannot run here, so the test plays Istio's status controller: it writes the Reconciled condition (the shape
test_mesh_status.py checks against Istio's docs) through the CRD's status subresource with the admin's token.
What the real server adds over a stand-in: the generation is the server's own (bumped by the controller's
patch, not by a status write), a spec patch keeps the old generation's status as it is, the status written
passes the CRD's schema, and the controller's token can read the object back.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from servectl.experiments.controller import IDLE, Controller, Metrics, NoEmitter, serve_metrics
from servectl.experiments.decision import Schedule
from servectl.experiments.kube import VS_API, ApiServer, VirtualServiceTarget
from servectl.experiments.local_prometheus import free_port, local_prometheus
from servectl.experiments.mesh_weights import SOURCE, MeshWeights
from servectl.experiments.promql import Prometheus
from servectl.experiments.run import Experiment, analyze
from servectl.experiments.window import confirm
from tests.kube_api import KubeApi
from tests.servectl.experiments.stack_objects import stack_model, stack_virtual_service

pytestmark = pytest.mark.slow

MODEL = stack_model()
NAMESPACE = MODEL.tenant
VIRTUAL_SERVICES = f"{VS_API}/namespaces/{NAMESPACE}/virtualservices"
VS_PATH = f"{VIRTUAL_SERVICES}/{MODEL.name}"
BEFORE = {"1": 90, "2": 10}


@pytest.fixture
def admin(cluster: KubeApi) -> ApiServer:
    """A fresh copy of the model's VirtualService at `BEFORE`, as the platform layer creates it: generation
    1 and no status yet (Istio has not looked at it)."""
    listed = cluster.admin.request("GET", VIRTUAL_SERVICES)["items"]
    if any(vs["metadata"]["name"] == MODEL.name for vs in listed):
        cluster.admin.request("DELETE", VS_PATH)
    deployed = stack_virtual_service(BEFORE)
    del deployed["metadata"]["resourceVersion"]
    cluster.admin.request("POST", VIRTUAL_SERVICES, deployed)
    return cluster.admin


def reconciled(state: str, generation: int) -> dict[str, Any]:
    """The status Istio writes with config status on: the generation's Reconciled condition, from now."""
    now = datetime.now(UTC).isoformat()
    condition = {"type": "Reconciled", "status": state, "observedGeneration": generation,
                 "lastTransitionTime": now, "message": "" if state == "True" else "1/2 proxies"}  # fmt: skip
    return {"conditions": [condition], "observedGeneration": generation}


def play_istio(admin: ApiServer, state: str) -> dict[str, Any]:
    """Istio's status write for the object's current generation, through the status subresource (a merge
    patch replaces the conditions list whole, as Istio's own update does); the stored object."""
    generation = int(admin.request("GET", VS_PATH)["metadata"]["generation"])
    body = {"status": reconciled(state, generation)}
    stored: dict[str, Any] = admin.request("PATCH", f"{VS_PATH}/status", body, "application/merge-patch+json")
    assert stored["status"] == body["status"], (
        f"the server kept Istio's status as written: {stored['status']}"
    )
    return stored


def _mesh_sample(registry: CollectorRegistry, version: str) -> float | None:
    return registry.get_sample_value("serving_variant_weight", {"model": MODEL.name, "version": version,
                                                                "source": SOURCE})  # fmt: skip


def _mesh(api: ApiServer) -> tuple[MeshWeights, CollectorRegistry]:
    registry = CollectorRegistry()
    return MeshWeights(registry, VirtualServiceTarget(api, NAMESPACE, MODEL.name, MODEL.name)), registry


def test_the_weights_are_exported_only_once_istio_reports_them_reconciled(
    admin: ApiServer, controller: ApiServer
) -> None:
    play_istio(admin, "False")
    mesh, registry = _mesh(controller)
    pending = mesh.refresh(since=0.0)
    assert pending.confirmed_at is None and "still applying" in str(pending.reason), pending
    assert _mesh_sample(registry, "1") is None, "nothing is exported before Istio confirms"
    play_istio(admin, "True")
    done = mesh.refresh(since=0.0)
    assert done.confirmed_at is not None, done
    assert (_mesh_sample(registry, "1"), _mesh_sample(registry, "2")) == (90.0, 10.0)


def test_without_istios_status_nothing_is_confirmed(admin: ApiServer, controller: ApiServer) -> None:
    assert "status" not in admin.request("GET", VS_PATH), "the object is as created, before Istio"
    mesh, registry = _mesh(controller)
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
    return confirm(prom, MODEL.name, weights, since, time.time(), source)


def test_a_mesh_steps_window_begins_when_the_controller_exports_istios_confirmation(
    admin: ApiServer, controller: ApiServer, tmp_path: Path
) -> None:
    """A failed load-test gate rolls back at the second interval; Istio is still applying the patch, then
    reports it reconciled, and only then does the step's window begin."""
    play_istio(admin, "True")
    log_path, metrics = tmp_path / "experiment.jsonl", Metrics(CollectorRegistry())
    said: list[str] = []
    with _scraped(metrics) as prom:
        target = VirtualServiceTarget(controller, NAMESPACE, MODEL.name, MODEL.name)
        experiment = Experiment(prometheus=prom.url, model=MODEL.name, log_path=log_path, gate_passed=False,
                                schedule=Schedule(settle_seconds=0.0), confirm_source=SOURCE)  # fmt: skip
        loop = Controller(experiment, target, metrics, NoEmitter(), echo=said.append,
                          mesh=MeshWeights(metrics.registry, target))  # fmt: skip
        assert loop.run(1.0, max_analyses=2, sleep=lambda s: None) == ["hold", "rollback"]
        assert any("Istio has reconciled generation 1, not 2" in line for line in said), said
        play_istio(admin, "False")
        after = {"1": 100, "2": 0}
        waiting = _confirmed_after(prom, after, loop.patched_at, SOURCE)
        assert waiting.confirmed_at is None and "still at v1 90 / v2 10" in str(waiting.reason), waiting
        play_istio(admin, "True")
        reconciled_at = time.time()
        assert loop.tick() == IDLE, "the experiment ended; the tick only confirms the mesh"
        done = _confirmed_after(prom, after, loop.patched_at, SOURCE)
        pods = _confirmed_after(prom, after, loop.patched_at, None)
        entry = analyze(experiment, after)
        pods_entry = analyze(replace(experiment, confirm_source=None), after)
    assert done.confirmed_at is not None and done.confirmed_at >= reconciled_at - 1.0, (done, reconciled_at)
    assert pods.confirmed_at is None and "no server reports" in str(pods.reason), "pods' series are apart"
    assert entry["window"]["step_start"] == done.confirmed_at, f"the window begins there: {entry['window']}"
    assert pods_entry["window"]["step_start"] is None, pods_entry["reasons"]
