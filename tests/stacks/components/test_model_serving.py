import pytest

from stacks.components.model_serving import ModelServing, ModelServingArgs
from stacks.manifests.serving import ServingSpec
from stacks.settings import StackConfig
from tests.stacks.conftest import TAGS, Built, build_component


@pytest.fixture(scope="module")
def served(eu_config: StackConfig) -> Built:
    model = eu_config.models[0]
    spec = ServingSpec(
        model=model,
        image=eu_config.image.serving_image("eu-central-1"),
        sync_image=eu_config.image.sync_image("eu-central-1"),
        bucket="acme-models-eu-central-1",
        region="eu-central-1",
        service_account=model.name,
        gateway="istio-system/model-api",
        api_host=eu_config.gateway.api_host,
    )
    args = ModelServingArgs(
        spec=spec,
        jwt_issuer=eu_config.gateway.jwt_issuer,
        bucket_arn="arn:aws:s3:::acme-models-eu-central-1",
        key_arn="arn:aws:kms:eu-central-1:123456789012:key/k",
        oidc_provider_arn="arn:aws:iam::123456789012:oidc-provider/x",
        oidc_issuer="https://oidc.eks.eu-central-1.amazonaws.com/id/X",
        tags=TAGS,
    )
    return build_component(lambda opts: ModelServing("m", args, opts))


def test_deployment_per_version(served: Built) -> None:
    names = sorted(d["metadata"]["name"] for d in served.kinds("Deployment"))
    assert names == ["tabular-classifier-v1", "tabular-classifier-v2"], f"deployments: {names}"


def test_image_pinned_by_digest_from_regional_registry(served: Built) -> None:
    for d in served.kinds("Deployment"):
        image = d["spec"]["template"]["spec"]["containers"][0]["image"]
        assert ".dkr.ecr.eu-central-1.amazonaws.com/" in image and "@sha256:" in image, f"image: {image}"


def test_probes_on_v2_health(served: Built) -> None:
    container = served.kinds("Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready", "readiness probe path"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live", "liveness probe path"


def test_security_context_hardened(served: Built) -> None:
    spec = served.kinds("Deployment")[0]["spec"]["template"]["spec"]
    for container in spec["containers"] + spec["initContainers"]:
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


def test_irsa_role_reads_only_its_model(served: Built) -> None:
    import json

    policy = json.loads(served.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    actions = {
        a
        for s in policy["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert actions <= {"s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket", "kms:Decrypt"}, (
        f"actions: {actions}"
    )


def test_hpa_pdb_and_network_policy_present(served: Built) -> None:
    assert len(served.kinds("HorizontalPodAutoscaler")) == 2, "an HPA per version"
    assert len(served.kinds("PodDisruptionBudget")) == 2, "a PDB per version"
    assert len(served.kinds("NetworkPolicy")) == 1, "the serving pods' network policy"


def test_authorization_requires_the_model_scope(served: Built) -> None:
    (authz,) = served.kinds("AuthorizationPolicy")
    assert authz["spec"]["rules"][0]["when"] == [
        {"key": "request.auth.claims[scope]", "values": ["models:tabular-classifier:infer"]}
    ], authz["spec"]
