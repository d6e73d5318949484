"""The controller's Kubernetes side: one VirtualService's weights as a `Target`, and an Event per decision.

It talks to the API server over HTTPS with the pod's service-account token (re-read on every call: the
kubelet rotates projected tokens), using the standard library only, so the image needs no Kubernetes client.
The Role it runs under allows `get` and `patch` on its one VirtualService and `create` on Events: the
requests here are exactly those three.

The weights live in the VirtualService's weighted route (`<model>-weighted`, the last, built by
`stacks.manifests.serving.virtual_service`); the model's versions are read from its pinned routes
(`<model>-v<N>`), since a version at weight 0 has no destination in the split. For a model with a sticky
header the bucket routes (`<model>-sticky-v<N>`) follow the weights too, and are rebuilt with the stack's
own bucket layout (`stacks.manifests.sticky`), so a user's bucket keeps meaning the same version on the
gateway as on the standalone server. A patch replaces the routes and carries a `test` of the
resourceVersion read, so a concurrent edit fails the patch (retried at the next interval) instead of
being overwritten.
"""

import json
import os
import ssl
import urllib.error
import urllib.request
from copy import deepcopy
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from servectl.experiments.decision import ROLLBACK, Schedule
from stacks.manifests import sticky

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


def _routes(vs: dict[str, Any]) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = vs.get("spec", {}).get("http", [])
    return routes


def weighted_route(vs: dict[str, Any], model: str) -> tuple[int, dict[str, Any]]:
    """The index and body of the model's weighted route."""
    found = [(i, r) for i, r in enumerate(_routes(vs)) if r.get("name") == f"{model}-weighted"]
    if not found:
        raise KubeError(f"VirtualService {vs['metadata'].get('name')} has no route {model}-weighted")
    return found[0]


def _pinned(vs: dict[str, Any], model: str) -> dict[str, dict[str, Any]]:
    """Version to its pinned route (`<model>-v<N>`: the explicit-version path, one per version)."""
    prefix = f"{model}-v"
    return {
        r["name"].removeprefix(prefix): r
        for r in _routes(vs)
        if r.get("name", "").startswith(prefix) and r["name"].removeprefix(prefix).isdigit()
    }


def read_weights(vs: dict[str, Any], model: str) -> dict[str, int]:
    """Every version of the model (from its pinned routes) to its percent in the weighted route."""
    weights = dict.fromkeys(_pinned(vs, model), 0)
    for destination in weighted_route(vs, model)[1]["route"]:
        weights[destination["destination"]["subset"].removeprefix("v")] = int(destination.get("weight", 100))
    return weights


def _sticky_routes(vs: dict[str, Any], model: str, weights: dict[str, int]) -> list[dict[str, Any]]:
    """The bucket routes for `weights`, built like the stack's (`serving.virtual_service`): each version
    with weight gets its bucket range, its pinned route's destination and fault, and the live routes'
    mirror unless it is the shadow itself. Empty for a model without a sticky header."""
    current = [r for r in _routes(vs) if r.get("name", "").startswith(f"{model}-sticky-")]
    if not current:
        return []
    pinned, template = _pinned(vs, model), current[0]
    mirror = next((r for r in [*current, weighted_route(vs, model)[1]] if "mirror" in r), None)
    out = []
    for version, first, end in sticky.bucket_ranges(list(weights.items())):
        route = deepcopy(template) | {"name": f"{model}-sticky-v{version}"}
        for match in route["match"]:
            match["headers"] = {sticky.BUCKET_HEADER: {"regex": sticky.bucket_regex(first, end)}}
        route["route"] = deepcopy(pinned[version]["route"])
        for key in ("fault", "mirror", "mirrorPercentage"):
            route.pop(key, None)
        if "fault" in pinned[version]:
            route["fault"] = deepcopy(pinned[version]["fault"])
        if mirror is not None and mirror["mirror"].get("subset") != f"v{version}":
            route |= {"mirror": mirror["mirror"], "mirrorPercentage": mirror["mirrorPercentage"]}
        out.append(route)
    return out


def with_weights(vs: dict[str, Any], model: str, weights: dict[str, int]) -> list[dict[str, Any]]:
    """The VirtualService's routes with `weights` applied: the weighted split (versions above 0 only, as
    the stack builds it) and, for a sticky model, the bucket routes; every other route unchanged."""
    index, weighted = weighted_route(vs, model)
    template = weighted["route"][0]["destination"]
    split = [
        {"destination": template | {"subset": f"v{version}"}, "weight": weight}
        for version, weight in sorted(weights.items(), key=lambda kv: int(kv[0]))
        if weight > 0
    ]
    others = [r for r in _routes(vs)[:index] if not r.get("name", "").startswith(f"{model}-sticky-")]
    return [
        *others,
        *_sticky_routes(vs, model, weights),
        weighted | {"route": split},
        *_routes(vs)[index + 1 :],
    ]


def weight_patch(vs: dict[str, Any], model: str, weights: dict[str, int]) -> list[dict[str, Any]]:
    """A JSON patch setting the routes to `with_weights`, guarded by the resourceVersion they were computed
    from, so an edit in between fails the patch instead of being overwritten."""
    return [
        {"op": "test", "path": "/metadata/resourceVersion", "value": vs["metadata"]["resourceVersion"]},
        {"op": "replace", "path": "/spec/http", "value": with_weights(vs, model, weights)},
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
