"""The platform's part of asynchronous inference: the add-ons, a model's workers, the syncer's identity."""

import json
from typing import Any

import pulumi
import pytest

from stacks.components import kube
from stacks.components.addons import AsyncInferenceAddons, AsyncInferenceAddonsArgs
from stacks.components.async_workers import AsyncWorkers, AsyncWorkersArgs
from stacks.components.identities import WorkloadIdentities, WorkloadIdentitiesArgs
from stacks.contract import ROLE_EXTERNAL_SECRETS
from stacks.manifests import serving
from stacks.preview.mocks import ACCOUNT_ID
from stacks.settings import StackConfig
from tests.stacks.conftest import TAGS, Built, build_component

REGISTRY = "345678901234.dkr.ecr.eu-central-1.amazonaws.com"
HOST = "master.eu-prod-eu-central-1-jobs.abc123.euc1.cache.amazonaws.com"
SECRET = (
    f"arn:aws:secretsmanager:eu-central-1:{ACCOUNT_ID}:secret:eu-prod-eu-central-1/job-queue/token-AbCdEf"
)
QUEUE_KEY = f"arn:aws:kms:eu-central-1:{ACCOUNT_ID}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/eu-prod-eu-central-1-external-secrets"


def _kind(built: Built, kind: str) -> Any:
    found = [
        r for r in built.registrations if r.type.startswith("kubernetes:") and r.type.endswith(f":{kind}")
    ]
    assert len(found) == 1, f"expected one {kind}, found {[r.name for r in found]}"
    return found[0]


@pytest.fixture(scope="module")
def workers(eu_config: StackConfig) -> Built:
    model = next(m for m in eu_config.models if m.async_workers is not None)
    spec = serving.ServingSpec(
        model=model,
        image=pulumi.Output.from_input(f"{REGISTRY}/model-serving/server@sha256:{'a' * 64}"),  # type: ignore[arg-type]
        sync_image=f"{REGISTRY}/mirror/aws-cli/aws-cli@sha256:{'b' * 64}",
        region="eu-central-1",
        service_account=model.name,
        gateway="istio-system/model-api",
        api_host=eu_config.gateway.api_host,
    )

    def make(opts: pulumi.ResourceOptions) -> None:
        before = pulumi.ComponentResource("test:index:Serving", "served", None, opts)
        # The model's identity, a child of its serving component (what depending on the component waits for).
        kube.create(
            "served-sa",
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": model.name, "namespace": model.tenant},
            },
            pulumi.ResourceOptions(parent=before),
        )
        AsyncWorkers(
            "w",
            AsyncWorkersArgs(
                spec=spec,
                # Infra-layer outputs at deploy time: the component must not need them as plain strings.
                queue_host=pulumi.Output.from_input(HOST),
                queue_secret_arn=pulumi.Output.from_input(SECRET),
                waits_for=(before,),
            ),
            opts,
        )

    return build_component(make)


def test_the_secret_and_scaler_name_the_queue_infra_exported(workers: Built) -> None:
    secret = _kind(workers, "ExternalSecret").inputs
    assert secret["spec"]["data"][0]["remoteRef"]["key"] == SECRET, secret["spec"]
    assert HOST in secret["spec"]["target"]["template"]["data"][serving.QUEUE_URL_KEY], secret["spec"]
    scaler = _kind(workers, "ScaledObject").inputs
    assert scaler["spec"]["triggers"][0]["metadata"]["address"] == f"{HOST}:6379", scaler["spec"]
    entry = _kind(workers, "ServiceEntry").inputs
    assert entry["spec"]["hosts"] == [HOST], entry["spec"]


def test_workers_start_once_their_secret_and_variants_exist(workers: Built) -> None:
    deployment = _kind(workers, "Deployment")
    for kind in ("ExternalSecret", "ConfigMap"):
        assert _kind(workers, kind).urn in deployment.dependencies, f"the workers may start before the {kind}"
    identity = _kind(workers, "ServiceAccount").urn
    assert identity in deployment.dependencies, "the workers may start before the model's identity"


def test_the_scaler_comes_after_what_it_scales_and_its_credentials(workers: Built) -> None:
    scaler = _kind(workers, "ScaledObject")
    assert _kind(workers, "Deployment").urn in scaler.dependencies, "KEDA would scale a missing Deployment"
    assert _kind(workers, "TriggerAuthentication").urn in scaler.dependencies, (
        "KEDA would find no credentials"
    )


@pytest.fixture(scope="module")
def addons() -> Built:
    args = AsyncInferenceAddonsArgs(
        registry=pulumi.Output.from_input(REGISTRY),
        region="eu-central-1",
        secrets_role_arn=pulumi.Output.from_input(ROLE),
        namespaces=("support", "payments", "support"),
    )
    return build_component(lambda opts: AsyncInferenceAddons("a", args, opts))


def _release(built: Built, chart: str) -> Any:
    found = [
        r for r in built.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["chart"].endswith(f"/{chart}")
    ]
    assert len(found) == 1, [r.inputs["chart"] for r in built.of_type("kubernetes:helm.sh/v3:Release")]
    return found[0]


@pytest.mark.parametrize("chart", ["keda", "external-secrets"])
def test_charts_come_from_the_in_region_mirror(addons: Built, chart: str) -> None:
    release = _release(addons, chart).inputs
    assert release["chart"] == f"oci://{REGISTRY}/mirror/charts/{chart}", release["chart"]
    refs = json.dumps(release["values"])
    assert "ghcr.io" not in refs and "docker.io" not in refs, "an image would be pulled from outside"


def test_keda_images_are_pinned_in_region(addons: Built) -> None:
    images = _release(addons, "keda").inputs["values"]["image"]
    assert set(images) == {"keda", "metricsApiServer", "webhooks"}, images
    for image in images.values():
        assert image["registry"] == REGISTRY and image["repository"].startswith("mirror/kedacore/"), image
        assert "@sha256:" in image["tag"], f"not pinned: {image}"


def test_the_syncer_runs_as_infras_role(addons: Built) -> None:
    account = _release(addons, "external-secrets").inputs["values"]["serviceAccount"]
    assert account["name"] == "external-secrets", account
    assert account["annotations"]["eks.amazonaws.com/role-arn"] == ROLE, account


def test_the_store_serves_only_the_async_models_namespaces(addons: Built) -> None:
    store = _kind(addons, "ClusterSecretStore")
    assert store.inputs["spec"]["conditions"] == [{"namespaces": ["payments", "support"]}], store.inputs[
        "spec"
    ]
    assert store.inputs["spec"]["provider"]["aws"] == {"service": "SecretsManager", "region": "eu-central-1"}
    assert _release(addons, "external-secrets").urn in store.dependencies, "the store's CRD would be missing"


def _identities(queue: bool) -> Built:
    extra: dict[str, Any] = {"queue_secret_arn": SECRET, "queue_key_arn": QUEUE_KEY} if queue else {}
    args = WorkloadIdentitiesArgs(
        cluster_name="eu-prod-eu-central-1",
        region="eu-central-1",
        oidc_provider_arn=f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/X",
        oidc_issuer="https://oidc.eks.eu-central-1.amazonaws.com/id/X",
        target_group_arn=f"arn:aws:elasticloadbalancing:eu-central-1:{ACCOUNT_ID}:targetgroup/g/0123456789abcdef",
        node_security_group_id="sg-0fedcba9876543210",
        log_group_arn=f"arn:aws:logs:eu-central-1:{ACCOUNT_ID}:log-group:/aws/eks/c/containers",
        model_bucket_arn="arn:aws:s3:::acme-models-eu-central-1",
        model_key_arn=QUEUE_KEY,
        models={"ticket-router": "support"},
        tags=TAGS,
        **extra,
    )
    return build_component(lambda opts: WorkloadIdentities("ids", args, opts))


def test_the_syncer_reads_only_the_token_and_decrypts_only_through_secrets_manager() -> None:
    built = _identities(queue=True)
    role = built.one("aws:iam/role:Role", f"-{ROLE_EXTERNAL_SECRETS}")
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Condition"]["StringEquals"]
    assert "system:serviceaccount:external-secrets:external-secrets" in trust.values(), trust
    statements = json.loads(
        built.one("aws:iam/rolePolicy:RolePolicy", f"-{ROLE_EXTERNAL_SECRETS}").inputs["policy"]
    )["Statement"]
    assert {s["Sid"]: s["Resource"] for s in statements} == {
        "ReadSecret": SECRET,
        "DecryptThroughSecretsManager": QUEUE_KEY,
    }, statements
    decrypt = next(s for s in statements if s["Sid"] == "DecryptThroughSecretsManager")
    assert decrypt["Action"] == "kms:Decrypt", decrypt
    assert decrypt["Condition"] == {
        "StringEquals": {"kms:ViaService": "secretsmanager.eu-central-1.amazonaws.com"}
    }


def test_no_syncer_role_without_a_queue() -> None:
    names = [r.name for r in _identities(queue=False).of_type("aws:iam/role:Role")]
    assert names and not [n for n in names if ROLE_EXTERNAL_SECRETS in n], names
