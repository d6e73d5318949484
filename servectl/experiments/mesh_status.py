"""Whether the mesh routes by a step's weights, in Istio's own words: the VirtualService's status.

In the mesh the split is Envoy's, not the server's: the pods serve one version each and their own
`serving_variant_weight` says nothing about it. Istio, with its config status on (`PILOT_ENABLE_STATUS`
and `PILOT_ENABLE_CONFIG_DISTRIBUTION_TRACKING`), sets the VirtualService's `Reconciled` condition true
once every proxy has acknowledged the object's generation; that condition, for the generation whose
weighted route holds the weights, is the mesh's confirmation, from the time it turned true. The
controller that patches the weights (issue 14 point 8) reads it after each patch and exports the
confirmed weights as `serving_variant_weight{model,version,source="mesh"}`, so `window.confirm` and a
replay read the mesh's boundary from Prometheus like a server's. Istio calls these status fields
experimental; without them nothing confirms the mesh, and the step holds with that reason.
"""

from datetime import datetime
from typing import Any

from servectl.experiments.window import Confirmation, show


def route_weights(virtual_service: dict[str, Any], model: str) -> dict[str, int]:
    """The weights of the model's weighted route (`<model>-weighted`), version to percent."""
    name = f"{model}-weighted"
    routes = [r for r in virtual_service.get("spec", {}).get("http", []) if r.get("name") == name]
    if len(routes) != 1:
        raise ValueError(f"VirtualService {_name(virtual_service)} has no single route named {name!r}")
    weights = {}
    for destination in routes[0]["route"]:
        version = str(destination["destination"]["subset"]).removeprefix("v")
        weights[version] = int(destination.get("weight", 100))
    return weights


def in_effect(
    virtual_service: dict[str, Any], model: str, weights: dict[str, int], since: float
) -> Confirmation:
    """Whether every proxy routes by `weights`: the weighted route holds them and Istio reports the
    object's current generation reconciled; confirmed from the condition's last transition, or from
    `since` (the patch) when it stayed true across the patch."""
    routed = route_weights(virtual_service, model)
    wanted = {v: w for v, w in weights.items() if w > 0}
    if routed != wanted:
        return Confirmation(None, f"the VirtualService routes {show(dict(routed))}, not {show(dict(wanted))}")
    generation = int(virtual_service["metadata"].get("generation", 0))
    status = virtual_service.get("status") or {}
    found = [c for c in status.get("conditions", []) if c.get("type") == "Reconciled"]
    if not found:
        return Confirmation(
            None,
            f"VirtualService {_name(virtual_service)} has no Reconciled condition: turn on Istio's config "
            "status (PILOT_ENABLE_STATUS, PILOT_ENABLE_CONFIG_DISTRIBUTION_TRACKING) to confirm the mesh",
        )
    condition = found[0]
    observed = int(condition.get("observedGeneration", status.get("observedGeneration", -1)))
    if observed != generation:
        return Confirmation(
            None,
            f"Istio has reconciled generation {observed}, not {generation}, which holds these weights",
        )
    if condition.get("status") != "True":
        return Confirmation(None, f"the mesh is still applying the weights: {condition.get('message', '')}")
    transition = datetime.fromisoformat(str(condition["lastTransitionTime"])).timestamp()
    return Confirmation(max(since, transition), None, 1)


def _name(virtual_service: dict[str, Any]) -> str:
    meta = virtual_service.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"
