"""The controller's Kubernetes side without a server: the routes it writes equal those the stack builds for
the same weights, the Event it builds, and the errors when no API server is there. The calls themselves,
RBAC and the Istio schema are tested against a real kube-apiserver in `test_kube_real.py`.
"""

from pathlib import Path
from typing import Any

import pytest

from servectl.experiments.kube import (
    ApiServer,
    KubeError,
    VirtualServiceTarget,
    event,
    read_weights,
    with_weights,
)
from stacks.settings import Fault, Shadow
from tests.servectl.experiments.stack_objects import stack_model, stack_virtual_service

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


def test_an_unreachable_api_server_is_a_kube_error_naming_the_call(tmp_path: Path) -> None:
    dead = ApiServer("http://127.0.0.1:9", None, timeout=2)
    with pytest.raises(KubeError, match=r"GET /apis/networking.istio.io/v1/.*is the API server reachable"):
        VirtualServiceTarget(dead, "payments", MODEL, MODEL).weights()


def test_outside_a_pod_in_cluster_config_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeError, match="not running in a pod"):
        ApiServer.in_cluster()
