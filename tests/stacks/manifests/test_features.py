"""The feature store's objects in a cluster (stacks/manifests/features.py): the ConfigMap holds the config
Feast reads, and the CronJob runs the materialization once at a time, restricted, bounded, with its own
identity and egress to DNS and HTTPS only."""

from typing import Any

import pytest
import yaml

from stacks import features
from stacks.manifests import features as fm
from tests.stacks.schemas import validate

ROLE = "arn:aws:iam::123456789012:role/eu-prod-eu-central-1-feature-materialize"
IMAGE = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/model-serving/retrain@sha256:" + "a" * 64
OFFLINE = "s3://acme-models-eu-central-1/features/"
SPEC = fm.FeatureJobSpec(
    namespace="payments",
    image=IMAGE,
    schedule="*/30 * * * *",
    role_arn=ROLE,
    region="eu-central-1",
    offline_root=OFFLINE,
)


def _pod(spec: fm.FeatureJobSpec = SPEC) -> dict[str, Any]:
    pod: dict[str, Any] = fm.cron_job(spec)["spec"]["jobTemplate"]["spec"]["template"]
    return pod


@pytest.mark.parametrize(
    "manifest",
    [
        fm.config_map("payments", "eu-prod", "model_serving", "eu-central-1", "acme-models-eu-central-1"),
        fm.service_account(SPEC),
        fm.network_policy("payments"),
        fm.cron_job(SPEC),
    ],
    ids=lambda m: m["kind"],
)
def test_every_object_validates(manifest: dict[str, Any]) -> None:
    validate(manifest)


def test_the_config_map_holds_the_in_cluster_feature_store_yaml() -> None:
    cm = fm.config_map("payments", "eu-prod", "model_serving", "eu-west-1", "acme-models-eu-west-1")
    assert cm["metadata"]["name"] == "feature-store" and cm["metadata"]["namespace"] == "payments", cm
    config = yaml.safe_load(cm["data"]["feature_store.yaml"])
    assert config == features.feature_store_config(
        "eu-prod", "model_serving", "eu-west-1", "acme-models-eu-west-1"
    )
    assert config["online_store"]["region"] == "eu-west-1", "the online store must be the cluster's region's"
    assert config["registry"]["path"] == "s3://acme-models-eu-west-1/feast/registry.db", config["registry"]


def test_the_registry_is_read_without_heading_the_bucket() -> None:
    """Feast's own S3 store asks HeadBucket, which needs s3:ListBucket on the whole model bucket; the
    config names the store that reads the object alone, and Feast resolves the name to it."""
    from feast.infra.registry.registry import get_registry_store_class_from_type

    from serving_image.features.registry_store import ObjectOnlyS3RegistryStore

    config = features.feature_store_config("eu-prod", "model_serving", "eu-west-1", "acme-models-eu-west-1")
    named = config["registry"]["registry_store_type"]
    assert get_registry_store_class_from_type(named) is ObjectOnlyS3RegistryStore, named


def _steps() -> list[dict[str, Any]]:
    """The init container, then the container."""
    spec = _pod()["spec"]
    return [*spec["initContainers"], *spec["containers"]]


def test_the_job_applies_then_materializes_on_the_mounted_repository() -> None:
    (apply,) = _pod()["spec"]["initContainers"]
    (materialize,) = _pod()["spec"]["containers"]
    assert apply["command"] == [
        "servectl",
        "features",
        "apply",
        "--repo",
        "/etc/feast",
        "--offline-root",
        OFFLINE,
    ], "the package's definitions into the region's registry, sources under the bucket's features/ first"
    assert materialize["command"] == ["servectl", "features", "materialize", "--repo", "/etc/feast"]
    for container in _steps():
        assert container["image"] == IMAGE, "the retrain image, which has Feast and the definitions"
        mount = {"name": "feature-repo", "mountPath": "/etc/feast", "readOnly": True}
        assert mount in container["volumeMounts"], container["volumeMounts"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "eu-central-1", "S3 calls stay in the region"
        assert env["AWS_STS_REGIONAL_ENDPOINTS"] == "regional", "STS stays in the region"
    assert {"name": "feature-repo", "configMap": {"name": "feature-store"}} in _pod()["spec"]["volumes"]


def test_the_offline_root_is_the_regions_bucket_prefix() -> None:
    assert features.offline_url("acme-models-eu-central-1") == OFFLINE


def test_one_run_at_a_time_on_the_schedule_and_bounded() -> None:
    spec = fm.cron_job(SPEC)["spec"]
    assert spec["schedule"] == "*/30 * * * *" and spec["timeZone"] == "Etc/UTC", spec
    assert spec["concurrencyPolicy"] == "Forbid", "two runs would overwrite each other's registry update"
    job = spec["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] == fm.DEADLINE_SECONDS and job["backoffLimit"] == 0, job
    assert _pod()["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize("step", [0, 1], ids=["apply", "materialize"])
def test_the_containers_are_restricted_with_limits(step: int) -> None:
    pod = _pod()["spec"]
    container = _steps()[step]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]} and security["runAsNonRoot"] is True, security
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, pod["securityContext"]
    limits = {"cpu": fm.CPU, "memory": fm.MEMORY}
    assert container["resources"] == {"requests": limits, "limits": limits}, container["resources"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], (
        "scratch beside a read-only root"
    )


def test_its_own_identity_is_infras_role_and_no_api_token() -> None:
    account = fm.service_account(SPEC)
    assert account["metadata"]["name"] == "feature-materialize", account
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": ROLE}, account
    pod = _pod()
    assert pod["spec"]["serviceAccountName"] == "feature-materialize", pod["spec"]
    assert pod["spec"]["automountServiceAccountToken"] is False, "it never calls the Kubernetes API"
    assert pod["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}, "a sidecar outlives a Job"


def test_the_network_policy_lets_nothing_in_and_only_dns_and_https_out() -> None:
    policy = fm.network_policy("payments")["spec"]
    assert policy["podSelector"] == {"matchLabels": fm.labels()}, policy
    assert policy["policyTypes"] == ["Ingress", "Egress"] and policy["ingress"] == [], policy
    ports = sorted((p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"])
    assert ports == [("TCP", 53), ("TCP", 443), ("UDP", 53)], ports
    (dns,) = [r for r in policy["egress"] if r.get("to")]
    assert dns["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}
    ]
    assert _pod()["metadata"]["labels"] == fm.labels(), "the policy would select no pod"
