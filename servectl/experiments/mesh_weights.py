"""The mesh's confirmed weights as a metric, so a mesh step's window can begin (issue 14 point 2).

In the mesh the pods serve one version each, so no pod's `serving_variant_weight` says what the gateway
routes by. The controller that patches the VirtualService is the one process that can ask Istio: after
each patch, and at every interval until then, it reads the object back and, once Istio reports its
generation reconciled (`mesh_status.in_effect`), exports the weights as
`serving_variant_weight{model,version,source="mesh"}` on its own /metrics. Until then the gauge keeps the
weights last confirmed, so `window.confirm(..., source="mesh")` sees the old weights and the step's
window waits, as it waits for a server that has not reloaded; a replay reads the same series back.
"""

from prometheus_client import CollectorRegistry, Gauge

from servectl.experiments.kube import VirtualServiceTarget, read_weights
from servectl.experiments.mesh_status import in_effect
from servectl.experiments.window import GAUGE, Confirmation

SOURCE = "mesh"
"""The `source` label of the mesh's series; the servers' own carry none."""


class MeshWeights:
    """Reads the mesh's confirmation from the VirtualService and exports the confirmed weights."""

    def __init__(self, registry: CollectorRegistry, target: VirtualServiceTarget) -> None:
        self.target = target
        self.gauge = Gauge(
            GAUGE,
            "Percent of weighted traffic the mesh routes to the version, once Istio reports it applied.",
            ["model", "version", "source"],
            registry=registry,
        )

    def refresh(self, since: float) -> Confirmation:
        """Read the VirtualService; if Istio has reconciled the generation holding its weights, export
        them (every version, 0 included, so a version dropped from the split reads 0 rather than stale).
        `since` is when the weights were last patched. Raises `KubeError` when the API server fails."""
        virtual_service = self.target.get()
        weights = read_weights(virtual_service, self.target.model)
        confirmation = in_effect(virtual_service, self.target.model, weights, since)
        if confirmation.confirmed_at is not None:
            for version, weight in weights.items():
                self.gauge.labels(self.target.model, version, SOURCE).set(weight)
        return confirmation
