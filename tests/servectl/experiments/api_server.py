"""A stand-in for the Kubernetes API server, for the controller's tests: no API server can run here.

It serves one VirtualService (built by the stack's own `serving.virtual_service`) the way the API server
documents (the object on GET and PATCH, 422 when a JSON patch's test fails, the body back on POST) and
records every request, so the tests can check verb, path, content type, token and body.
"""

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import yaml

from servectl.experiments.kube import ApiServer
from stacks.config import parse_config
from stacks.manifests.serving import ServingSpec, virtual_service
from stacks.settings import ModelConfig

ROOT = Path(__file__).resolve().parents[3]


def stack_model(**variants: Any) -> ModelConfig:
    """eu-prod's model with a rollout block, with `variants` replaced."""
    config = yaml.safe_load((ROOT / "Pulumi.eu-prod.yaml").read_text())["config"]
    values = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("model-serving:")}
    parsed = parse_config(
        values, stack="eu-prod", source="Pulumi.eu-prod.yaml", aws_region=config["aws:region"]
    )
    model = next(m for m in parsed.models if m.rollout is not None)
    return replace(model, variants=replace(model.variants, **variants))


def stack_virtual_service(weights: dict[str, int], **variants: Any) -> dict[str, Any]:
    """The VirtualService the stack builds for that model with these weights, as the API server returns it."""
    model = stack_model(weights=tuple(weights.items()), **variants)
    spec = ServingSpec(
        model=model, image="i", sync_image="s", region="eu-central-1", service_account=model.name,
        gateway="istio-system/model-api", api_host="api.models.example.eu",
    )  # fmt: skip
    built = virtual_service(spec)
    built["metadata"]["resourceVersion"] = "41"
    return built


class Recorder(BaseHTTPRequestHandler):
    """Answers as the API server would for one VirtualService; records every request."""

    vs: dict[str, Any] = {}
    calls: list[tuple[str, str, str, str, Any]] = []
    conflict = False
    store = False
    """Keep what a patch writes, bumping generation and resourceVersion, as the API server does."""
    reconcile: str | None = None
    """With `store`: the Reconciled condition Istio then reports for the new generation (None: none)."""

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
        patch = self._record()
        if self.conflict:
            self._answer(422, {"kind": "Status", "message": "the server rejected our request: test failed"})
            return
        if self.store:
            Recorder.vs = patched(self.vs, patch, self.reconcile)
            self._answer(200, Recorder.vs)
            return
        self._answer(200, self.vs | {"metadata": self.vs["metadata"] | {"resourceVersion": "42"}})

    def do_POST(self) -> None:
        self._answer(201, self._record())

    def log_message(self, *args: Any) -> None:
        """Quiet."""


def reconciled(state: str, generation: int) -> dict[str, Any]:
    """The status Istio writes with config status on: the generation's Reconciled condition, from now."""
    now = datetime.now(UTC).isoformat()
    condition = {"type": "Reconciled", "status": state, "observedGeneration": generation,
                 "lastTransitionTime": now, "message": "" if state == "True" else "1/2 proxies"}  # fmt: skip
    return {"conditions": [condition], "observedGeneration": generation}


def patched(vs: dict[str, Any], patch: list[dict[str, Any]], reconcile: str | None) -> dict[str, Any]:
    """The object after a JSON patch replacing `/spec/http` (the only write the controller makes)."""
    out = deepcopy(vs)
    for op in patch:
        if op["op"] == "replace" and op["path"] == "/spec/http":
            out["spec"]["http"] = op["value"]
    meta = out["metadata"]
    meta["generation"] = int(meta.get("generation", 1)) + 1
    meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
    out.pop("status", None)
    if reconcile is not None:
        out["status"] = reconciled(reconcile, meta["generation"])
    return out


@contextmanager
def recording_api(tmp_path: Path, served: dict[str, Any]) -> Iterator[ApiServer]:
    """An `ApiServer` for the stand-in serving `served`, with a token file; stopped on exit."""
    Recorder.vs, Recorder.calls, Recorder.conflict = served, [], False
    Recorder.store, Recorder.reconcile = False, None
    server = HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    token = tmp_path / "token"
    token.write_text("sa-token\n")
    try:
        yield ApiServer(f"http://127.0.0.1:{server.server_address[1]}", token)
    finally:
        server.shutdown()
