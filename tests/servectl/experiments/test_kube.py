"""The controller's Kubernetes side: the routes it writes equal those the stack builds for the same weights,
and the three API calls its Role allows are made as the API server expects.

No API server can run here, so the calls go to a loopback stand-in (`api_server.py`) that records them and
answers as the API server documents; what that proves is the request shape (verb, path, content type,
token, body), not the API server's admission.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servectl.experiments.kube import (
    ApiServer,
    EventEmitter,
    KubeError,
    VirtualServiceTarget,
    event,
    read_weights,
    with_weights,
)
from stacks.settings import Fault, Shadow
from tests.servectl.experiments.api_server import Recorder, recording_api, stack_model, stack_virtual_service

_model, _vs = stack_model, stack_virtual_service


MODEL = _model().name
TWO = {"sticky_header": "x-user-id"}
CASES = {
    "promote": ({"1": 90, "2": 10}, {"1": 75, "2": 25}, TWO),
    "rollback drops the candidate's bucket route": ({"1": 90, "2": 10}, {"1": 100, "2": 0}, TWO),
    "complete drops the baseline's": ({"1": 90, "2": 10}, {"1": 0, "2": 100}, TWO),
    "no sticky header": ({"1": 95, "2": 5}, {"1": 50, "2": 50}, {"sticky_header": None}),
    "fault and shadow": (
        {"1": 90, "2": 10, "3": 0},
        {"1": 50, "2": 50, "3": 0},
        TWO
        | {
            "shadow": Shadow(version="3", percent=20),
            "faults": (("2", Fault(delay_ms=20, error_ratio=0.1)),),
        },
    ),
}


@pytest.mark.parametrize(("before", "after", "variants"), CASES.values(), ids=CASES.keys())
def test_the_patched_routes_are_the_stacks_routes_for_the_new_weights(
    before: dict[str, int], after: dict[str, int], variants: dict[str, Any]
) -> None:
    written = with_weights(_vs(before, **variants), MODEL, after)
    expected = _vs(after, **variants)["spec"]["http"]
    assert written == expected, f"{before} -> {after}: the controller and the stack disagree on the routes"


def test_weights_are_read_for_every_version_even_at_zero() -> None:
    assert read_weights(_vs({"1": 100, "2": 0}, **TWO), MODEL) == {"1": 100, "2": 0}
    assert read_weights(_vs({"1": 90, "2": 10}, **TWO), MODEL) == {"1": 90, "2": 10}


ENTRY = {"time": 1764500000.25, "decision": "rollback", "candidate": "2", "step": 25,
         "reasons": ["error rate: v2 2.1% vs v1 0.1%" * 80]}  # fmt: skip


def test_a_rollback_is_a_warning_event_on_the_virtual_service_with_a_bounded_note() -> None:
    body = event(ENTRY, "patched", "payments", MODEL, "ctl-0")
    assert (body["type"], body["reason"], body["action"]) == ("Warning", "ExperimentRollback", "Rollback")
    assert body["regarding"] == {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                                 "namespace": "payments", "name": MODEL}  # fmt: skip
    assert len(body["note"]) <= 1024, len(body["note"])
    assert body["eventTime"] == "2025-11-30T10:53:20.250000Z", body["eventTime"]
    promote = event(ENTRY | {"decision": "promote", "reasons": ["ok"]}, "patched", "payments", MODEL, "c")
    assert (promote["type"], promote["reason"]) == ("Normal", "ExperimentPromote"), promote


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    with recording_api(tmp_path, _vs({"1": 90, "2": 10}, **TWO)) as server:
        yield server


def test_apply_reads_then_patches_only_its_virtual_service_with_a_guarded_json_patch(api: ApiServer) -> None:
    target = VirtualServiceTarget(api, "payments", MODEL, MODEL)
    assert target.weights() == {"1": 90, "2": 10}
    done = target.apply({"1": 75, "2": 25})
    assert "resourceVersion 42" in done, done
    path = f"/apis/networking.istio.io/v1/namespaces/payments/virtualservices/{MODEL}"
    assert [(c[0], c[1]) for c in Recorder.calls] == [("GET", path), ("GET", path), ("PATCH", path)]
    _, _, auth, kind, patch = Recorder.calls[-1]
    assert (auth, kind) == ("Bearer sa-token", "application/json-patch+json"), (auth, kind)
    assert patch[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "41"}, patch[0]
    assert (
        patch[1]["path"] == "/spec/http"
        and patch[1]["value"] == _vs({"1": 75, "2": 25}, **TWO)["spec"]["http"]
    )


def test_a_concurrent_edit_fails_the_patch_with_the_servers_reason(api: ApiServer) -> None:
    Recorder.conflict = True
    with pytest.raises(KubeError, match=r"PATCH .*: 422 the server rejected our request: test failed"):
        VirtualServiceTarget(api, "payments", MODEL, MODEL).apply({"1": 75, "2": 25})


def test_an_event_is_created_in_the_models_namespace(api: ApiServer) -> None:
    EventEmitter(api, "payments", MODEL, "ctl-0").emit(ENTRY, "patched")
    ((verb, path, _, kind, body),) = Recorder.calls
    assert (verb, path, kind) == (
        "POST",
        "/apis/events.k8s.io/v1/namespaces/payments/events",
        "application/json",
    )
    assert body["reportingInstance"] == "ctl-0" and body["reason"] == "ExperimentRollback", body


def test_an_unreachable_api_server_is_a_kube_error_naming_the_call(tmp_path: Path) -> None:
    dead = ApiServer("http://127.0.0.1:9", None, timeout=2)
    with pytest.raises(KubeError, match=r"GET /apis/networking.istio.io/v1/.*is the API server reachable"):
        VirtualServiceTarget(dead, "payments", MODEL, MODEL).weights()


def test_outside_a_pod_in_cluster_config_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeError, match="not running in a pod"):
        ApiServer.in_cluster()
