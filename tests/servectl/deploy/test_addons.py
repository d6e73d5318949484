"""Who deploys what: the add-ons (each Helm release with what it needs) are found through dependencies,
parents and providers; a change to one is named; the deployer's destroy leaves them, the stack and the
providers. On a small hand-made preview and on the offline plan of a shipped stack."""

from typing import Any

import pytest

from servectl.deploy import addons
from stacks.preview.run import plan_stack

STACK = "urn:pulumi:s::p::pulumi:pulumi:Stack::p-s"
PROVIDER = "urn:pulumi:s::p::pulumi:providers:kubernetes::k8s"
RELEASE = "kubernetes:helm.sh/v3:Release"


def state(name: str, kind: str, parent: str = STACK, dependencies: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "urn": urn(name, kind),
        "type": kind,
        "parent": parent,
        "dependencies": list(dependencies),
        "provider": f"{PROVIDER}::0000",
    }


def urn(name: str, kind: str) -> str:
    return f"urn:pulumi:s::p::{kind}::{name}"


MESH = urn("mesh", "model-serving:mesh:Mesh")
NAMESPACE = urn("mesh-ns", "kubernetes:core/v1:Namespace")
ISTIOD = urn("mesh-istiod", RELEASE)


def preview(op: str = "create") -> dict[str, Any]:
    states = [
        {"urn": STACK, "type": "pulumi:pulumi:Stack"},
        {"urn": PROVIDER, "type": "pulumi:providers:kubernetes"},
        state("mesh", "model-serving:mesh:Mesh"),
        state("mesh-ns", "kubernetes:core/v1:Namespace", MESH),
        state("mesh-istiod", RELEASE, MESH, (NAMESPACE,)),
        state("mesh-gateway", "kubernetes:networking.istio.io/v1:Gateway", MESH, (ISTIOD,)),
        state("tenant-ns", "kubernetes:core/v1:Namespace"),
    ]
    return {"steps": [{"op": op if s["type"] == RELEASE else "same", "urn": s["urn"], "newState": s}
                      for s in states]}  # fmt: skip


def test_the_addons_are_the_releases_with_their_dependencies_parents_and_providers() -> None:
    assert addons.closure(addons.planned_states(preview())) == {ISTIOD, NAMESPACE, MESH, STACK, PROVIDER}


def test_what_depends_on_a_release_is_not_an_addon() -> None:
    found = addons.closure(addons.planned_states(preview()))
    assert urn("mesh-gateway", "kubernetes:networking.istio.io/v1:Gateway") not in found
    assert urn("tenant-ns", "kubernetes:core/v1:Namespace") not in found


@pytest.mark.parametrize("op", ["create", "update", "replace", "delete"])
def test_a_release_the_preview_would_change_is_named(op: str) -> None:
    document = preview(op)
    if op == "delete":
        for step in document["steps"]:
            step["oldState"] = step.pop("newState")
    assert addons.changed_addons(document) == [f"{op} mesh-istiod"]


def test_unchanged_releases_are_no_change() -> None:
    assert addons.changed_addons(preview("same")) == []


def test_the_deployers_destroy_leaves_the_addons_the_stack_and_the_providers() -> None:
    exported = {"resources": addons.planned_states(preview())}
    assert sorted(addons.deployer_part(exported)) == sorted(
        [urn("mesh-gateway", "kubernetes:networking.istio.io/v1:Gateway"),
         urn("tenant-ns", "kubernetes:core/v1:Namespace")]
    )  # fmt: skip


def test_a_dependency_missing_from_the_document_is_no_crash() -> None:
    document = preview()
    document["steps"] = [s for s in document["steps"] if s["urn"] != NAMESPACE]
    assert NAMESPACE not in addons.closure(addons.planned_states(document))


def test_on_the_shipped_onprem_plan_the_charts_namespaces_are_addons_and_the_tenants_are_not() -> None:
    document = plan_stack("onprem-ae", layer="platform").document
    found = addons.closure(addons.planned_states(document))
    names = {u.rsplit("::", 1)[-1] for u in found}
    releases = [s["urn"] for s in document["steps"] if s["newState"]["type"] == RELEASE]
    assert len(releases) >= 6 and set(releases) <= found
    assert {"ae-dc1-mesh-ns", "ae-dc1-monitoring-ns", "ae-dc1-monitoring-alertmanager-config"} <= names, (
        sorted(names)
    )
    assert not any("tenant-banking" in n or "-model-" in n for n in names), sorted(names)
    assert "ae-dc1-monitoring-rules" not in names, "a PrometheusRule needs the chart, not the reverse"
