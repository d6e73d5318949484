import pulumi
import pytest

from stacks.artifacts import load_lock
from stacks.components.model_serving import ModelServing, ModelServingArgs
from stacks.manifests.serving import ServingSpec
from stacks.settings import StackConfig
from tests.stacks.conftest import Built, build_component
from tests.stacks.schemas import validate

REGISTRY = "123456789012.dkr.ecr.eu-central-1.amazonaws.com"
ROLE = "arn:aws:iam::123456789012:role/eu-prod-tabular-classifier"
BUCKET = "acme-models-eu-central-1"


def _build(eu_config: StackConfig, role_arn: str | None) -> Built:
    model = eu_config.models[0]
    spec = ServingSpec(
        model=model,
        image=eu_config.image.serving_image(REGISTRY),
        sync_image=load_lock().image("aws-cli").ref(REGISTRY),
        region="eu-central-1",
        service_account=model.name,
        gateway="istio-system/model-api",
        api_host=eu_config.gateway.api_host,
    )
    args = ModelServingArgs(
        spec=spec,
        jwt_issuer=eu_config.gateway.jwt_issuer,
        # An output of the infra layer at deploy time: the component must not need it as a plain string.
        bucket=pulumi.Output.from_input(BUCKET),
        role_arn=None if role_arn is None else pulumi.Output.from_input(role_arn),
    )
    return build_component(lambda opts: ModelServing("m", args, opts))


@pytest.fixture(scope="module")
def served(eu_config: StackConfig) -> Built:
    return _build(eu_config, ROLE)


@pytest.fixture(scope="module")
def without_irsa(eu_config: StackConfig) -> Built:
    return _build(eu_config, None)


def test_deployment_per_version(served: Built) -> None:
    names = sorted(d["metadata"]["name"] for d in served.kinds("Deployment"))
    assert names == ["tabular-classifier-v1", "tabular-classifier-v2"], f"deployments: {names}"


def test_image_pinned_by_digest_from_regional_registry(served: Built) -> None:
    assert len(served.kinds("Deployment")) == 2, "one Deployment per version"
    for d in served.kinds("Deployment"):
        image = d["spec"]["template"]["spec"]["containers"][0]["image"]
        assert ".dkr.ecr.eu-central-1.amazonaws.com/" in image and "@sha256:" in image, f"image: {image}"


def test_probes_wait_for_the_deployments_own_version(served: Built) -> None:
    assert len(served.kinds("Deployment")) == 2, "one Deployment per version"
    for deployment in served.kinds("Deployment"):
        version = deployment["spec"]["template"]["metadata"]["labels"]["version"].removeprefix("v")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        path = f"/v2/models/tabular-classifier/versions/{version}/ready"
        assert container["readinessProbe"]["httpGet"]["path"] == path, container["readinessProbe"]
        assert container["startupProbe"]["httpGet"]["path"] == path, container["startupProbe"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live", "liveness probe path"


def test_security_context_hardened(served: Built) -> None:
    spec = served.kinds("Deployment")[0]["spec"]["template"]["spec"]
    containers = spec["containers"] + spec["initContainers"]
    assert len(containers) == 2, f"the server and the model sync: {[c['name'] for c in containers]}"
    for container in containers:
        ctx = container["securityContext"]
        assert ctx["runAsNonRoot"] and ctx["runAsUser"] == 10001, f"{container['name']}: {ctx}"
        assert ctx["readOnlyRootFilesystem"] is True, f"{container['name']}: writable root"
        assert ctx["allowPrivilegeEscalation"] is False, f"{container['name']}: escalation allowed"
        assert ctx["capabilities"] == {"drop": ["ALL"]}, f"{container['name']}: capabilities kept"


def test_weighted_route_sums_to_100(served: Built) -> None:
    (vs,) = served.kinds("VirtualService")
    weighted = vs["spec"]["http"][-1]["route"]
    assert sum(d["weight"] for d in weighted) == 100, f"weights: {weighted}"
    assert {d["destination"]["subset"]: d["weight"] for d in weighted} == {"v1": 90, "v2": 10}, weighted


def test_header_route_precedes_weights(served: Built) -> None:
    (vs,) = served.kinds("VirtualService")
    header = [r for r in vs["spec"]["http"] if "headers" in r["match"][0]]
    assert header and header[0]["match"][0]["headers"] == {"x-segment": {"exact": "enterprise"}}, header
    assert header[0]["route"][0]["destination"]["subset"] == "v2", "enterprise segment must go to v2"


def test_subset_per_version_and_sticky_hash(served: Built) -> None:
    (dr,) = served.kinds("DestinationRule")
    assert [s["name"] for s in dr["spec"]["subsets"]] == ["v1", "v2"], dr["spec"]["subsets"]
    assert dr["spec"]["trafficPolicy"]["loadBalancer"]["consistentHash"] == {"httpHeaderName": "x-user-id"}


def test_routes_have_timeouts_and_retries(served: Built) -> None:
    (vs,) = served.kinds("VirtualService")
    assert all("timeout" in r and r["retries"]["attempts"] >= 1 for r in vs["spec"]["http"]), vs["spec"][
        "http"
    ]


@pytest.mark.parametrize("fixture", ["served", "without_irsa"])
def test_only_kubernetes_objects(fixture: str, request: pytest.FixtureRequest) -> None:
    built: Built = request.getfixturevalue(fixture)
    custom = {r.type for r in built.registrations if r.custom and not r.type.startswith("pulumi:providers:")}
    assert custom and all(t.startswith("kubernetes:") for t in custom), f"the platform makes no AWS: {custom}"


def test_service_account_carries_the_infra_role(served: Built, without_irsa: Built) -> None:
    (account,) = served.kinds("ServiceAccount")
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": ROLE}, account["metadata"]
    (plain,) = without_irsa.kinds("ServiceAccount")
    assert "annotations" not in plain["metadata"], f"no IRSA, no annotation: {plain['metadata']}"


def test_bucket_name_reaches_the_pods_through_the_store_config(served: Built) -> None:
    (store,) = served.kinds("ConfigMap")
    assert store["data"] == {"bucket": BUCKET}, store
    for deployment in served.kinds("Deployment"):
        (sync,) = deployment["spec"]["template"]["spec"]["initContainers"]
        ref = next(e for e in sync["env"] if e["name"] == "MODEL_BUCKET")["valueFrom"]["configMapKeyRef"]
        assert ref["name"] == store["metadata"]["name"], (
            f"the sync reads {ref}, the store is {store['metadata']}"
        )
        assert store["metadata"]["namespace"] == deployment["metadata"]["namespace"], "same namespace"


def test_deployments_wait_for_their_account_and_store(served: Built) -> None:
    needed = {r.urn for r in served.registrations if r.type.endswith((":ServiceAccount", ":ConfigMap"))}
    assert len(needed) >= 2, f"an account and a store to wait for: {needed}"
    assert len(served.of_type("kubernetes:apps/v1:Deployment")) == 2, "one Deployment per version"
    for deployment in served.of_type("kubernetes:apps/v1:Deployment"):
        assert needed <= set(deployment.dependencies), (
            f"{deployment.name} depends on {deployment.dependencies}"
        )


def test_every_object_validates(served: Built) -> None:
    objects = [r for r in served.registrations if r.custom and r.type.startswith("kubernetes:")]
    for registration in objects:
        group, kind = registration.type.split(":")[1:]
        validate({**registration.inputs, "apiVersion": group.removeprefix("core/"), "kind": kind})
    assert len(objects) >= 10, f"only {len(objects)} objects checked: {sorted(r.type for r in objects)}"


def test_pods_admit_only_the_gateway(served: Built) -> None:
    policies = {p["metadata"]["name"]: p for p in served.kinds("AuthorizationPolicy")}
    pod = policies["tabular-classifier-from-gateway"]
    namespaces = {d["metadata"]["namespace"] for d in served.kinds("Deployment")}
    assert {pod["metadata"]["namespace"]} == namespaces, f"beside the pods in {namespaces}: {pod['metadata']}"
    assert pod["spec"]["rules"][0]["from"] == [
        {"source": {"principals": ["cluster.local/ns/istio-system/sa/istio-ingressgateway"]}}
    ], pod["spec"]


def test_hpa_pdb_and_network_policy_present(served: Built) -> None:
    assert len(served.kinds("HorizontalPodAutoscaler")) == 2, "an HPA per version"
    assert len(served.kinds("PodDisruptionBudget")) == 2, "a PDB per version"
    assert len(served.kinds("NetworkPolicy")) == 1, "the serving pods' network policy"


def test_authorization_requires_the_model_scope(served: Built) -> None:
    (authz,) = [
        p for p in served.kinds("AuthorizationPolicy") if p["metadata"]["namespace"] == "istio-system"
    ]
    assert authz["spec"]["rules"][0]["when"] == [
        {"key": "request.auth.claims[scope]", "values": ["models:tabular-classifier:infer"]}
    ], authz["spec"]
