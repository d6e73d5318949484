"""The controller's Kubernetes side: the routes it writes equal those the stack builds for the same weights,
and the three API calls its Role allows are made as the API server expects.

No API server can run here, so the calls go to a loopback HTTP server that records them and answers as
the API server documents (the object on GET and PATCH, 422 on a failed JSON-patch test); what that proves
is the request shape (verb, path, content type, token, body), not the API server's admission.
"""

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from servectl.experiments.kube import (
    ApiServer,
    EventEmitter,
    KubeError,
    VirtualServiceTarget,
    event,
    read_weights,
    with_weights,
)
from stacks.config import parse_config
from stacks.manifests.serving import ServingSpec, virtual_service
from stacks.settings import Fault, ModelConfig, Shadow

ROOT = Path(__file__).resolve().parents[3]


def _model(**variants: Any) -> ModelConfig:
    config = yaml.safe_load((ROOT / "Pulumi.eu-prod.yaml").read_text())["config"]
    values = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("model-serving:")}
    parsed = parse_config(
        values, stack="eu-prod", source="Pulumi.eu-prod.yaml", aws_region=config["aws:region"]
    )
    model = next(m for m in parsed.models if m.rollout is not None)
    return replace(model, variants=replace(model.variants, **variants))


def _vs(weights: dict[str, int], **variants: Any) -> dict[str, Any]:
    model = _model(weights=tuple(weights.items()), **variants)
    spec = ServingSpec(
        model=model, image="i", sync_image="s", region="eu-central-1", service_account=model.name,
        gateway="istio-system/model-api", api_host="api.models.example.eu",
    )  # fmt: skip
    vs = virtual_service(spec)
    vs["metadata"]["resourceVersion"] = "41"
    return vs


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


class _Recorder(BaseHTTPRequestHandler):
    """Answers as the API server would for one VirtualService; records every request."""

    vs: dict[str, Any] = {}
    calls: list[tuple[str, str, str, str, Any]] = []
    conflict = False

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        auth, kind = self.headers.get("Authorization", ""), self.headers.get("Content-Type", "")
        self.calls.append((self.command, self.path, auth, kind, body))
        return body

    def do_GET(self) -> None:
        self._record()
        self._answer(200, self.vs)

    def do_PATCH(self) -> None:
        self._record()
        if self.conflict:
            self._answer(422, {"kind": "Status", "message": "the server rejected our request: test failed"})
            return
        self._answer(200, self.vs | {"metadata": self.vs["metadata"] | {"resourceVersion": "42"}})

    def do_POST(self) -> None:
        self._answer(201, self._record())

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    _Recorder.vs, _Recorder.calls, _Recorder.conflict = _vs({"1": 90, "2": 10}, **TWO), [], False
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    token = tmp_path / "token"
    token.write_text("sa-token\n")
    try:
        yield ApiServer(f"http://127.0.0.1:{server.server_address[1]}", token)
    finally:
        server.shutdown()


def test_apply_reads_then_patches_only_its_virtual_service_with_a_guarded_json_patch(api: ApiServer) -> None:
    target = VirtualServiceTarget(api, "payments", MODEL, MODEL)
    assert target.weights() == {"1": 90, "2": 10}
    done = target.apply({"1": 75, "2": 25})
    assert "resourceVersion 42" in done, done
    path = f"/apis/networking.istio.io/v1/namespaces/payments/virtualservices/{MODEL}"
    assert [(c[0], c[1]) for c in _Recorder.calls] == [("GET", path), ("GET", path), ("PATCH", path)]
    _, _, auth, kind, patch = _Recorder.calls[-1]
    assert (auth, kind) == ("Bearer sa-token", "application/json-patch+json"), (auth, kind)
    assert patch[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "41"}, patch[0]
    assert (
        patch[1]["path"] == "/spec/http"
        and patch[1]["value"] == _vs({"1": 75, "2": 25}, **TWO)["spec"]["http"]
    )


def test_a_concurrent_edit_fails_the_patch_with_the_servers_reason(api: ApiServer) -> None:
    _Recorder.conflict = True
    with pytest.raises(KubeError, match=r"PATCH .*: 422 the server rejected our request: test failed"):
        VirtualServiceTarget(api, "payments", MODEL, MODEL).apply({"1": 75, "2": 25})


def test_an_event_is_created_in_the_models_namespace(api: ApiServer) -> None:
    EventEmitter(api, "payments", MODEL, "ctl-0").emit(ENTRY, "patched")
    ((verb, path, _, kind, body),) = _Recorder.calls
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
