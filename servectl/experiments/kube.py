"""The controller's Kubernetes side: one VirtualService's weights as a `Target`, and an Event per decision.

It talks to the API server over HTTPS with the pod's service-account token (re-read on every call: the
kubelet rotates projected tokens), using the standard library only, so the image needs no Kubernetes client.
The Role it runs under allows `get` and `patch` on its one VirtualService and `create` on Events: the
requests here are exactly those three.

The weights live in the VirtualService's weighted route (`<model>-weighted`, the last, built by
`stacks.manifests.serving.virtual_service`); the model's versions are read from its pinned routes
(`<model>-v<N>`), since a version at weight 0 has no destination in the split. A patch replaces that one
route's destinations and carries a `test` of the resourceVersion read, so a concurrent edit fails the patch
(retried at the next interval) instead of being overwritten. A model whose versions are also assigned by a
sticky header is refused: its bucket routes follow the weights too, and patching the split alone would
leave users on stale buckets.
"""

import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from servectl.experiments.decision import ROLLBACK, Schedule

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
VS_API = "apis/networking.istio.io/v1"
EVENTS_API = "apis/events.k8s.io/v1"
REPORTING_CONTROLLER = "model-serving.io/rollout-controller"
NOTE_LIMIT = 1024
"""The API server refuses an Event whose note is longer than 1 kB."""


class KubeError(RuntimeError):
    """The API server could not be reached or refused a request; the message says which and why."""


@dataclass(frozen=True)
class ApiServer:
    """Where the API server is and how to authenticate to it."""

    url: str
    """Base URL, e.g. https://10.100.0.1:443."""
    token_file: Path | None
    """The bearer token's file (None: no token, for a local test server)."""
    ca_file: Path | None = None
    """The CA bundle that signed the API server's certificate (None: the system's)."""
    timeout: float = 10.0

    @classmethod
    def in_cluster(cls) -> "ApiServer":
        """The API server of the pod's cluster, from the variables and files the kubelet provides."""
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise KubeError("KUBERNETES_SERVICE_HOST/PORT are not set: not running in a pod")
        host = f"[{host}]" if ":" in host else host
        return cls(f"https://{host}:{port}", SERVICE_ACCOUNT_DIR / "token", SERVICE_ACCOUNT_DIR / "ca.crt")

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        """One call; the decoded JSON answer. Raises `KubeError` naming the call and the server's reason."""
        headers = {"Accept": "application/json"}
        if self.token_file is not None:
            headers["Authorization"] = f"Bearer {self.token_file.read_text().strip()}"
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = content_type
        if not self.url.startswith(("https://", "http://")):
            raise KubeError(f"{self.url} is not an http(s) URL")
        req = urllib.request.Request(  # noqa: S310 - the scheme is checked above
            f"{self.url}/{path}", data=data, headers=headers, method=method
        )
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=context) as answer:  # noqa: S310 - http(s) only
                return json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as error:
            raise KubeError(f"{method} /{path}: {error.code} {_reason(error)}") from error
        except (OSError, ValueError) as error:
            raise KubeError(f"{method} /{path}: {error}; is the API server reachable?") from error


def _reason(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read()).get("message", error.reason))
    except ValueError:
        return str(error.reason)


def weighted_route(vs: dict[str, Any], model: str) -> tuple[int, dict[str, Any]]:
    """The index and body of the model's weighted route."""
    routes = vs.get("spec", {}).get("http", [])
    found = [(i, r) for i, r in enumerate(routes) if r.get("name") == f"{model}-weighted"]
    if not found:
        raise KubeError(f"VirtualService {vs['metadata'].get('name')} has no route {model}-weighted")
    return found[0]


def read_weights(vs: dict[str, Any], model: str) -> dict[str, int]:
    """Every version of the model (from its pinned routes) to its percent in the weighted route."""
    routes = vs.get("spec", {}).get("http", [])
    sticky = [r["name"] for r in routes if r.get("name", "").startswith(f"{model}-sticky-")]
    if sticky:
        raise ValueError(
            f"{model} assigns versions by a sticky header ({', '.join(sticky)}): its bucket routes follow "
            "the weights too; step it with `servectl experiment step --stack` and `pulumi up` instead"
        )
    pinned = {
        r["name"].removeprefix(f"{model}-v") for r in routes if r.get("name", "").startswith(f"{model}-v")
    }
    weights = {version: 0 for version in pinned if version.isdigit()}
    for destination in weighted_route(vs, model)[1]["route"]:
        weights[destination["destination"]["subset"].removeprefix("v")] = int(destination.get("weight", 100))
    return weights


def weight_patch(vs: dict[str, Any], model: str, weights: dict[str, int]) -> list[dict[str, Any]]:
    """A JSON patch setting the weighted route's destinations to `weights` (versions above 0 only, as the
    stack builds them), guarded by the resourceVersion it was computed from."""
    index, route = weighted_route(vs, model)
    template = route["route"][0]["destination"]
    destinations = [
        {"destination": template | {"subset": f"v{version}"}, "weight": weight}
        for version, weight in sorted(weights.items(), key=lambda kv: int(kv[0]))
        if weight > 0
    ]
    return [
        {"op": "test", "path": "/metadata/resourceVersion", "value": vs["metadata"]["resourceVersion"]},
        {"op": "replace", "path": f"/spec/http/{index}/route", "value": destinations},
    ]


@dataclass(frozen=True)
class VirtualServiceTarget:
    """A model's weights in its VirtualService, read and patched through the API server."""

    api: ApiServer
    namespace: str
    name: str
    model: str

    @property
    def path(self) -> str:
        """The object's API path."""
        return f"{VS_API}/namespaces/{self.namespace}/virtualservices/{self.name}"

    def get(self) -> dict[str, Any]:
        """The VirtualService as it is now."""
        vs: dict[str, Any] = self.api.request("GET", self.path)
        return vs

    def weights(self) -> dict[str, int]:
        """The weights in effect at the mesh."""
        return read_weights(self.get(), self.model)

    def schedule(self) -> Schedule | None:
        """The VirtualService carries no schedule: the Deployment's arguments give it."""
        return None

    def apply(self, weights: dict[str, int]) -> str:
        """Patch the weighted route; Istio pushes the new split to the gateways within seconds."""
        patch = weight_patch(self.get(), self.model, weights)
        done = self.api.request("PATCH", self.path, patch, "application/json-patch+json")
        shown = ", ".join(f"v{v} {w}%" for v, w in weights.items())
        version = done.get("metadata", {}).get("resourceVersion")
        return f"patched VirtualService {self.namespace}/{self.name}: {shown} (resourceVersion {version})"


def event(entry: dict[str, Any], applied: str, namespace: str, vs_name: str, instance: str) -> dict[str, Any]:
    """An events.k8s.io/v1 Event on the VirtualService for one decision: a Warning for a rollback."""
    decision = entry["decision"]
    note = f"{decision} v{entry['candidate']} at {entry['step']}%: {'; '.join(entry['reasons'])}; {applied}"
    now = datetime.fromtimestamp(entry["time"], UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"generateName": f"{vs_name}-", "namespace": namespace},
        "eventTime": now,
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance,
        "action": decision.capitalize(),
        "reason": f"Experiment{decision.capitalize()}",
        "type": "Warning" if decision == ROLLBACK else "Normal",
        "note": note[: NOTE_LIMIT - 3] + "..." if len(note) > NOTE_LIMIT else note,
        "regarding": {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "namespace": namespace,
            "name": vs_name,
        },
    }


@dataclass(frozen=True)
class EventEmitter:
    """Creates an Event per decision, so `kubectl describe virtualservice` and event exporters show it."""

    api: ApiServer
    namespace: str
    vs_name: str
    instance: str
    """The reporting pod's name."""

    def emit(self, entry: dict[str, Any], applied: str) -> None:
        """Create the Event."""
        body = event(entry, applied, self.namespace, self.vs_name, self.instance)
        self.api.request("POST", f"{EVENTS_API}/namespaces/{self.namespace}/events", body)
