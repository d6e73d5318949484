"""The retrain receiver's manifests: schema-valid, hardened as the workload policy asks, no Kubernetes
permissions, one replica on a state volume, reachable only by Alertmanager at the URL its route uses."""

from typing import Any

import pytest
import yaml

from servectl.retrain_receiver.config import parse_config
from stacks.manifests import monitoring as mon
from stacks.manifests import retrain as rt
from tests.stacks.schemas import validate

IMAGE = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/model-serving@sha256:" + "a" * 64
SPEC = rt.RetrainSpec(
    image=IMAGE,
    datasets={"tabular-classifier": rt.dataset_uri("acme-models", "tabular-classifier")},
    storage_class="encrypted-gp3",
    role_arn="arn:aws:iam::123456789012:role/eu-prod-retrain",
)


def _container(spec: rt.RetrainSpec = SPEC) -> dict[str, Any]:
    containers: list[dict[str, Any]] = rt.deployment(spec)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, containers
    return containers[0]


@pytest.mark.parametrize("manifest", rt.manifests(SPEC), ids=lambda m: m["kind"])
def test_every_object_validates_in_the_monitoring_namespace(manifest: dict[str, Any]) -> None:
    validate(manifest)
    assert manifest["metadata"]["namespace"] == mon.NAMESPACE, manifest["metadata"]


def test_the_container_is_hardened_with_limits_and_probes() -> None:
    container = _container()
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001, security
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False, (
        security
    )
    assert security["capabilities"] == {"drop": ["ALL"]}, security
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}, container["resources"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz", container[probe]
    assert container["image"] == IMAGE, container["image"]


def test_it_serves_the_receiver_with_the_mounted_config() -> None:
    container = _container()
    assert container["command"][:2] == ["servectl", "retrain-receiver"], container["command"]
    config_path = container["command"][container["command"].index("--config") + 1]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert config_path.startswith(rt.CONFIG_DIR + "/") and mounts[rt.CONFIG_DIR]["readOnly"], mounts


def test_the_config_map_is_a_config_the_receiver_accepts() -> None:
    text = rt.config_map(SPEC)["data"]["receiver.yaml"]
    config = parse_config(yaml.safe_load(text), "receiver.yaml")
    target = config.models["tabular-classifier"]
    assert target.data == "s3://acme-models/training/tabular-classifier/labelled.csv", target
    assert target.command == ("servectl", "retrain"), target
    state = target.args[target.args.index("--state") + 1]
    assert state.startswith(rt.STATE_DIR), f"trigger keys kept off the state volume: {target.args}"


def test_state_survives_restarts_on_a_claim_and_one_replica_runs() -> None:
    spec = rt.deployment(SPEC)["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}, spec["strategy"]
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == rt.state_volume(SPEC)["metadata"]["name"]
    assert rt.state_volume(SPEC)["spec"]["storageClassName"] == "encrypted-gp3"


def test_no_kubernetes_permissions_and_the_irsa_role() -> None:
    pod = rt.deployment(SPEC)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False, "a token for an API it never calls"
    assert pod["serviceAccountName"] == rt.service_account(SPEC)["metadata"]["name"]
    kinds = {m["kind"] for m in rt.manifests(SPEC)}
    assert not kinds & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}, kinds
    annotations = rt.service_account(SPEC)["metadata"]["annotations"]
    assert annotations == {"eks.amazonaws.com/role-arn": SPEC.role_arn}, annotations


def test_on_premises_the_store_endpoint_and_credentials_reach_boto3() -> None:
    spec = rt.RetrainSpec(
        image=IMAGE, datasets={}, storage_class="local", store_endpoint="https://s3.example.ae",
        store_credentials_secret="store-credentials",
    )  # fmt: skip
    container = _container(spec)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["AWS_ENDPOINT_URL_S3"] == "https://s3.example.ae", env
    assert container["envFrom"] == [{"secretRef": {"name": "store-credentials"}}], container.get("envFrom")
    assert "annotations" not in rt.service_account(spec)["metadata"], "an IRSA role without IRSA"


def test_the_service_and_network_policy_admit_alertmanager_at_the_webhook_url() -> None:
    service, policy = rt.service(), rt.network_policy()
    port = service["spec"]["ports"][0]["port"]
    assert rt.webhook_url() == f"http://{service['metadata']['name']}.{mon.NAMESPACE}.svc:{port}/alerts"
    assert service["spec"]["selector"] == rt.labels() == policy["spec"]["podSelector"]["matchLabels"]
    [rule] = policy["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "alertmanager"}}}], (
        rule
    )


def test_every_model_bucket_is_a_publish_bucket_the_retrain_reads_first_and_publishes_to() -> None:
    spec = rt.RetrainSpec(
        image=IMAGE, datasets=SPEC.datasets, storage_class="encrypted-gp3",
        model_buckets=("acme-models-eu-central-1", "acme-models-eu-west-1"),
    )  # fmt: skip
    document = rt.receiver_config(spec)
    assert document["args"] == [
        "--state", f"{rt.STATE_DIR}/state",
        "--publish-bucket", "s3://acme-models-eu-central-1/models",
        "--publish-bucket", "s3://acme-models-eu-west-1/models",
    ], document["args"]  # fmt: skip
    parsed = parse_config(yaml.safe_load(rt.config_map(spec)["data"]["receiver.yaml"]), "receiver.yaml")
    assert "--publish-bucket" in parsed.models["tabular-classifier"].args, parsed
