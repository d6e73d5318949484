"""The controller's Kubernetes side against a real API server (`tests/kube_api.py`, the session's `cluster`
in conftest.py): the namespace, the VirtualService the platform layer deploys, and the controller's Role and
RoleBinding exactly as `stacks.manifests.rollout_controller` builds them; then, with the controller's own
token, the three calls its Role allows succeed and the rest are refused by real RBAC, and a patch that
breaks the Istio schema is refused by the real CRD validation and reported as the controller reports any
refused apply.
"""

from copy import deepcopy
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from servectl.experiments import log
from servectl.experiments.checks import FEEDBACK_METRICS
from servectl.experiments.controller import Controller, Metrics, NoEmitter
from servectl.experiments.decision import Schedule, Thresholds
from servectl.experiments.kube import (
    EVENTS_API,
    ApiServer,
    EventEmitter,
    KubeError,
    VirtualServiceTarget,
    read_weights,
    weight_patch,
)
from servectl.experiments.local_prometheus import local_prometheus
from servectl.experiments.run import Experiment
from stacks.manifests import rollout_controller
from stacks.manifests.monitoring import RULES_FILE
from tests.kube_api import KubeApi
from tests.servectl.experiments.stack_objects import stack_model, stack_virtual_service

pytestmark = pytest.mark.slow

MODEL = stack_model()
NAMESPACE = MODEL.tenant
STICKY = {"sticky_header": "x-user-id"}
BEFORE = {"1": 90, "2": 10}
OTHER = f"{MODEL.name}-other"
VS_PATH = f"apis/networking.istio.io/v1/namespaces/{NAMESPACE}/virtualservices"


def deployed_vs(weights: dict[str, int], name: str = MODEL.name) -> dict[str, Any]:
    """The platform layer's VirtualService for the model, as it is sent to the API server (no
    resourceVersion: the server assigns it)."""
    vs = stack_virtual_service(weights, **STICKY)
    del vs["metadata"]["resourceVersion"]
    vs["metadata"]["name"] = name
    return vs


@pytest.fixture
def admin(cluster: KubeApi) -> ApiServer:
    """A fresh copy of the model's VirtualService and of another model's, at `BEFORE`, for each test."""
    present = {vs["metadata"]["name"] for vs in cluster.admin.request("GET", VS_PATH)["items"]}
    for name in (MODEL.name, OTHER):
        if name in present:
            cluster.admin.request("DELETE", f"{VS_PATH}/{name}")
        cluster.admin.request("POST", VS_PATH, deployed_vs(BEFORE, name))
    return cluster.admin


def test_the_controller_reads_and_patches_its_weights_and_the_server_stores_the_stacks_routes(
    admin: ApiServer, controller: ApiServer
) -> None:
    target = VirtualServiceTarget(controller, NAMESPACE, MODEL.name, MODEL.name)
    assert target.weights() == BEFORE, "the controller reads the deployed weights"
    done = target.apply({"1": 75, "2": 25})
    assert done.startswith(f"patched VirtualService {NAMESPACE}/{MODEL.name}: v1 75%, v2 25%"), done
    stored = admin.request("GET", f"{VS_PATH}/{MODEL.name}")
    expected = deployed_vs({"1": 75, "2": 25})["spec"]["http"]
    assert stored["spec"]["http"] == expected, "the stored routes (after pruning) are the stack's for 75/25"
    assert read_weights(stored, MODEL.name) == {"1": 75, "2": 25}
    assert f"resourceVersion {stored['metadata']['resourceVersion']}" in done, done


def test_a_stale_read_is_refused_not_overwritten(admin: ApiServer, controller: ApiServer) -> None:
    """The patch's `test` of the resourceVersion: an edit between read and patch fails the patch."""
    path = f"{VS_PATH}/{MODEL.name}"
    read = controller.request("GET", path)
    admin.request("PATCH", path, {"metadata": {"labels": {"edited": "yes"}}}, "application/merge-patch+json")
    with pytest.raises(KubeError, match=r"PATCH .*: 422 the server rejected our request"):
        controller.request("PATCH", path, weight_patch(read, MODEL.name, {"1": 50, "2": 50}),
                           "application/json-patch+json")  # fmt: skip
    assert read_weights(admin.request("GET", path), MODEL.name) == BEFORE, "the edit was not overwritten"


ENTRY = {"time": 1764500000.25, "decision": "rollback", "candidate": "2", "step": 25,
         "reasons": ["error rate: v2 2.1% vs v1 0.1%" * 80]}  # fmt: skip


def test_the_controller_creates_a_decision_event_the_server_accepts(
    admin: ApiServer, controller: ApiServer
) -> None:
    """A real server refuses a note over 1 kB: the long reasons here must have been cut."""
    EventEmitter(controller, NAMESPACE, MODEL.name, "ctl-0").emit(ENTRY, "patched")
    events = admin.request("GET", f"{EVENTS_API}/namespaces/{NAMESPACE}/events")["items"]
    ours = [e for e in events if e.get("reportingInstance") == "ctl-0"]
    assert len(ours) == 1, events
    assert (ours[0]["type"], ours[0]["reason"], ours[0]["regarding"]["name"]) == (
        "Warning", "ExperimentRollback", MODEL.name,
    ), ours[0]  # fmt: skip


def test_another_virtual_service_is_forbidden(admin: ApiServer, controller: ApiServer) -> None:
    other = admin.request("GET", f"{VS_PATH}/{OTHER}")
    patch = weight_patch(other, MODEL.name, {"1": 50, "2": 50})
    with pytest.raises(KubeError, match=r"PATCH .*/virtualservices/.*-other: 403 .*forbidden"):
        controller.request("PATCH", f"{VS_PATH}/{OTHER}", patch, "application/json-patch+json")
    with pytest.raises(KubeError, match=r"GET .*: 403 "):
        VirtualServiceTarget(controller, NAMESPACE, OTHER, MODEL.name).weights()
    assert read_weights(admin.request("GET", f"{VS_PATH}/{OTHER}"), MODEL.name) == BEFORE


@pytest.mark.parametrize(
    ("verb", "path"),
    [("DELETE", f"{VS_PATH}/{MODEL.name}"), ("GET", VS_PATH),
     ("GET", f"api/v1/namespaces/{NAMESPACE}/secrets"),
     ("GET", f"{EVENTS_API}/namespaces/{NAMESPACE}/events")],
    ids=["delete its virtual service", "list virtual services", "list secrets", "list events"],
)  # fmt: skip
def test_what_the_role_does_not_grant_is_forbidden(admin: ApiServer, controller: ApiServer, verb: str,
                                                   path: str) -> None:  # fmt: skip
    with pytest.raises(KubeError, match=rf"{verb} /{path}: 403 "):
        controller.request(verb, path)
    assert admin.request("GET", f"{VS_PATH}/{MODEL.name}")["metadata"]["name"] == MODEL.name


class SchemaBreakingTarget(VirtualServiceTarget):
    """The controller's target with one fault put in on purpose: its weights are sent as strings, which the
    Istio CRD's schema (an int32 `weight`) refuses. Only the patch body differs; the call is the real one."""

    def apply(self, weights: dict[str, int]) -> str:
        patch = weight_patch(self.get(), self.model, weights)
        for route in patch[1]["value"]:
            for destination in route.get("route", []):
                if "weight" in destination:
                    destination["weight"] = str(destination["weight"])
        self.api.request("PATCH", self.path, patch, "application/json-patch+json")
        return "patched"


def test_a_patch_breaking_the_istio_schema_is_refused_with_the_field(
    admin: ApiServer, controller: ApiServer
) -> None:
    target = SchemaBreakingTarget(controller, NAMESPACE, MODEL.name, MODEL.name)
    with pytest.raises(KubeError, match=r"PATCH .*: 422 .*spec\.http\[\d+\]\.route\[0\]\.weight"):
        target.apply({"1": 75, "2": 25})
    stored = admin.request("GET", f"{VS_PATH}/{MODEL.name}")
    assert read_weights(stored, MODEL.name) == BEFORE, "nothing of the refused patch was stored"


def test_the_controller_reports_a_refused_patch_and_decides_again(
    admin: ApiServer, controller: ApiServer, tmp_path: Path
) -> None:
    """A failed load-test gate rolls back; the server refuses each patch, so each interval decides again,
    the failure is counted, no step is logged and the weights stand."""
    metrics, log_path = Metrics(CollectorRegistry()), tmp_path / "experiment.jsonl"
    experiment = Experiment(
        prometheus="", model=MODEL.name, log_path=log_path, gate_passed=False,
        schedule=Schedule(steps=(50, 100), min_samples=200, interval_seconds=4, failed_checks=1,
                          settle_seconds=2.0),
        thresholds=Thresholds(error_margin=0.02, latency_tolerance=0.1,
                              optional_metrics=frozenset(FEEDBACK_METRICS)),
    )  # fmt: skip
    target = SchemaBreakingTarget(controller, NAMESPACE, MODEL.name, MODEL.name)
    with local_prometheus(["127.0.0.1:9"], rules=RULES_FILE.with_name("experiment-rules.yaml")) as prom:
        controller_loop = Controller(replace(experiment, prometheus=prom.url), target, metrics, NoEmitter(),
                                     echo=lambda line: None)  # fmt: skip
        outcomes = controller_loop.run(4.0, max_analyses=3, sleep=lambda s: None)
    assert outcomes[0] == "hold", f"the first analysis records the start: {outcomes}"
    assert all(o.startswith("error: rollback not applied: ") and " 422 " in o for o in outcomes[1:]), outcomes
    failed = metrics.registry.get_sample_value(
        "serving_experiment_controller_errors_total", {"model": MODEL.name, "stage": "apply"}
    )
    assert failed == 2, f"each refused apply is counted: {failed}"
    assert [e["event"] for e in log.read(log_path)] == ["analysis"] * 3, "no step is logged"
    assert read_weights(admin.request("GET", f"{VS_PATH}/{MODEL.name}"), MODEL.name) == BEFORE


def test_the_deployed_objects_are_what_the_stack_builds(admin: ApiServer) -> None:
    """Nothing of the Role was dropped or defaulted away: RBAC enforces the object the stack wrote."""
    role = admin.request("GET", f"apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}/roles/"
                                f"{rollout_controller.name(MODEL)}")  # fmt: skip
    assert role["rules"] == rollout_controller.role(MODEL)["rules"], role["rules"]
    unchanged = deepcopy(deployed_vs(BEFORE))["spec"]
    assert admin.request("GET", f"{VS_PATH}/{MODEL.name}")["spec"] == unchanged, "the CRD pruned a field"
