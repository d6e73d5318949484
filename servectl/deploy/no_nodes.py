"""Deploying into a control plane without nodes (`servectl cluster up`, `servectl deploy --no-nodes`).

Such a cluster has an API server, etcd and the controller-manager, but no kubelet or scheduler: no pod ever
runs. Two things the stacks rightly do on a real cluster would then never finish, so this mode changes them,
and only them, through a Pulumi resource transform (the stacks users deploy are never changed):

- every Kubernetes object gets `pulumi.com/skipAwait: "true"`: the provider would otherwise wait for
  Deployments' pods and Services' endpoints that cannot come;
- every Helm release is installed from a local chart holding only the CRDs its pinned chart registers (from
  the charts' own source modules, fetched by `make setup`: mk/chartcrds.mk, mk/kubeapi.mk), with the
  stack's values, not awaited: a chart's workloads cannot run, its admission webhooks would refuse every
  object with no pod behind them, and the charts' registries are not reachable here. The stack's own
  custom resources (PrometheusRules, Certificates, VirtualServices, ...) are then created against the real
  schemas, in the order the stack declares.
"""

import datetime
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi
import yaml

from stacks.artifacts import load_lock

ROOT = Path(__file__).resolve().parents[2]
CHART_CRDS = ROOT / ".tools" / "chart-crds"
ISTIO_CRDS = ROOT / ".tools" / "kube-crds" / "istio-v1.32.0.yaml"
RELEASE = "kubernetes:helm.sh/v3:Release"
SKIP_AWAIT = "pulumi.com/skipAwait"
STAND_IN_REASON = (
    "a CRD-only stand-in of the pinned chart, built from its source module: the cluster runs no nodes and "
    "the chart's in-region mirror is not reachable from it"
)


class NoNodesError(RuntimeError):
    """A chart's CRD source is missing; the message names it and `make setup`."""


def crd_sources(chart: str, chart_crds: Path = CHART_CRDS, istio_crds: Path = ISTIO_CRDS) -> list[Path]:
    """The files a chart's CRD-only stand-in installs as templates: none for charts that register no CRD."""
    if chart == "base":  # Istio's base chart: the mesh's CRDs
        return [istio_crds]
    if chart == "kube-prometheus-stack":
        return sorted((chart_crds / chart).glob("*.yaml"))
    if chart == "cert-manager":  # templates gated on crds.enabled, with the chart's own helpers
        return [*sorted((chart_crds / chart).glob("crd-*.yaml")), chart_crds / chart / "_helpers.tpl"]
    return []


def build_charts(out: Path, chart_crds: Path = CHART_CRDS, istio_crds: Path = ISTIO_CRDS) -> dict[str, Path]:
    """A local chart per chart of the artifacts lock, named and versioned as the pinned one; chart name to
    its directory. Raises NoNodesError when a CRD source is missing."""
    charts: dict[str, Path] = {}
    for chart in load_lock().charts.values():
        directory = out / chart.name
        templates, crds = directory / "templates", directory / "crds"
        templates.mkdir(parents=True, exist_ok=True)
        crds.mkdir(exist_ok=True)
        sources = crd_sources(chart.name, chart_crds, istio_crds)
        missing = [str(p) for p in sources if not p.is_file()]
        if missing or (chart.name == "kube-prometheus-stack" and not sources):
            raise NoNodesError(
                f"chart {chart.name}: CRD source {', '.join(missing) or chart_crds / chart.name} missing; "
                "run `make setup` (mk/chartcrds.mk, mk/kubeapi.mk)"
            )
        for source in sources:
            # Plain CRDs go to crds/, which Helm installs unless they exist (`servectl cluster up` applies
            # Istio's); cert-manager's are templates, rendered with the stack's values.
            place = templates if chart.name == "cert-manager" else crds
            (place / source.name).write_bytes(source.read_bytes())
        defaults = chart_crds / chart.name / "values.yaml"
        (directory / "values.yaml").write_bytes(defaults.read_bytes() if defaults.is_file() else b"{}\n")
        meta = {
            "apiVersion": "v2",
            "name": chart.name,
            "version": chart.version,
            "description": f"CRDs only of {chart.name} {chart.version} (servectl deploy --no-nodes)",
        }
        (directory / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
        charts[chart.name] = directory
    return charts


def _annotated(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    meta = dict(metadata or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), SKIP_AWAIT: "true"}
    return meta


def _local_chart(charts: Mapping[str, Path], reference: str) -> str:
    """The local stand-in of an OCI chart reference (`oci://<registry>/mirror/charts/<name>`)."""
    name = reference.rstrip("/").rsplit("/", 1)[-1]
    if name not in charts:
        raise NoNodesError(f"chart {reference}: not in the artifacts lock, so no local stand-in")
    return str(charts[name])


def transform(charts: Mapping[str, Path]) -> Any:
    """The resource transform of this mode (see the module docstring); everything else passes unchanged."""

    def apply(args: pulumi.ResourceTransformArgs) -> pulumi.ResourceTransformResult | None:
        if not args.custom or not args.type_.startswith("kubernetes:"):
            return None
        props = dict(args.props)
        if args.type_ == RELEASE:
            props["chart"] = pulumi.Output.from_input(props["chart"]).apply(lambda c: _local_chart(charts, c))
            props.update(skipAwait=True, atomic=False, waitForJobs=False)
        else:
            props["metadata"] = pulumi.Output.from_input(props.get("metadata")).apply(_annotated)
        return pulumi.ResourceTransformResult(props=props, opts=args.opts)

    return apply


def stand_in_waivers(document: Mapping[str, Any], charts: Mapping[str, Path]) -> list[dict[str, str]]:
    """One waiver of RES-007 (a chart from outside the in-region mirror) per Helm release of a preview whose
    chart is one of `charts`: the gate rightly flags the stand-ins, and the deploy says, in the gate's own
    report, why they are there. Expires today: it is written for this run only."""
    local = {str(path) for path in charts.values()}
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    return [
        {
            "id": "RES-007",
            "urn": step["urn"],
            "owner": "servectl deploy --no-nodes",
            "expires": today,
            "reason": STAND_IN_REASON,
        }
        for step in document.get("steps", [])
        if step.get("newState", {}).get("type") == RELEASE
        and step["newState"].get("inputs", {}).get("chart") in local
    ]
