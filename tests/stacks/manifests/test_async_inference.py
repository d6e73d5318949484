"""The manifests of a model's asynchronous inference, and the serving pods' part in it."""

import dataclasses
from typing import Any

import pytest
import yaml

from serving_image.model_config import ModelConfig as ServerModelConfig
from stacks.manifests import async_inference, serving
from stacks.settings import ASYNC_RESULT_TTL_SECONDS, ModelConfig, StackConfig
from tests.stacks.schemas import validate

HOST = "master.eu-prod-eu-central-1-jobs.abc123.euc1.cache.amazonaws.com"
SECRET = (
    "arn:aws:secretsmanager:eu-central-1:345678901234:secret:eu-prod-eu-central-1/job-queue/auth-token-AbCdEf"
)
REGISTRY = "345678901234.dkr.ecr.eu-central-1.amazonaws.com"


@pytest.fixture(scope="module")
def model(eu_config: StackConfig) -> ModelConfig:
    found = [m for m in eu_config.models if m.async_workers is not None]
    assert [m.name for m in found] == ["ticket-router"], found
    return found[0]


@pytest.fixture(scope="module")
def sync_only(eu_config: StackConfig) -> ModelConfig:
    return next(m for m in eu_config.models if m.async_workers is None)


def spec(model: ModelConfig) -> serving.ServingSpec:
    return serving.ServingSpec(
        model=model,
        image=f"{REGISTRY}/model-serving/server@sha256:{'a' * 64}",
        sync_image=f"{REGISTRY}/mirror/aws-cli/aws-cli@sha256:{'b' * 64}",
        region="eu-central-1",
        service_account=model.name,
        gateway="istio-system/model-api",
        api_host="api.models.example.eu",
    )


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_serving_pods_of_an_async_model_get_the_queue_from_its_secret(model: ModelConfig) -> None:
    server = serving.deployment(spec(model), "1")["spec"]["template"]["spec"]["containers"][0]
    found = env(server)
    assert found["SERVING_ASYNC_REDIS_URL"] == {
        "secretKeyRef": {"name": "ticket-router-async-queue", "key": serving.QUEUE_URL_KEY}
    }, "the URL (with the AUTH token) must come from the Secret, never the manifest"
    assert found["SERVING_ASYNC_STREAM"] == "inference-jobs:ticket-router", found
    assert found["SERVING_ASYNC_MAX_QUEUED"] == "100000", found
    assert "SERVING_ASYNC_WORKER" not in found, "a serving pod must not consume the queue"


def test_models_without_async_get_neither_queue_nor_its_port(sync_only: ModelConfig) -> None:
    server = serving.deployment(spec(sync_only), "1")["spec"]["template"]["spec"]["containers"][0]
    assert not [n for n in env(server) if n.startswith("SERVING_ASYNC")], env(server)
    egress = serving.network_policy(sync_only)["spec"]["egress"]
    assert all(p["port"] != serving.QUEUE_PORT for rule in egress for p in rule.get("ports", [])), egress


def test_serving_pods_of_an_async_model_may_reach_the_queue_port(model: ModelConfig) -> None:
    egress = serving.network_policy(model)["spec"]["egress"]
    assert {"ports": [{"protocol": "TCP", "port": serving.QUEUE_PORT}]} in egress, egress


def test_workers_are_not_selected_by_the_models_service(model: ModelConfig) -> None:
    worker = async_inference.worker_deployment(spec(model))
    pod_labels = worker["spec"]["template"]["metadata"]["labels"]
    selector = serving.service(model)["spec"]["selector"]
    assert not selector.items() <= pod_labels.items(), "synchronous traffic would reach the workers"
    assert worker["spec"]["selector"]["matchLabels"] == pod_labels, worker["spec"]["selector"]
    netpol = serving.network_policy(model)["spec"]["podSelector"]["matchLabels"]
    assert not netpol.items() <= pod_labels.items(), (
        "the serving NetworkPolicy would open the gateway to workers"
    )


def test_workers_consume_the_stream_with_every_version(model: ModelConfig) -> None:
    worker = async_inference.worker_deployment(spec(model))
    pod = worker["spec"]["template"]["spec"]
    server = pod["containers"][0]
    found = env(server)
    assert found["SERVING_ASYNC_WORKER"] == "true", found
    assert found["SERVING_ASYNC_STREAM"] == serving.job_stream(model), found
    synced = [c["args"][1] for c in pod["initContainers"]]
    assert synced == [f"/models/{model.name}/{v}" for v in model.variants.versions], synced
    assert len({c["name"] for c in pod["initContainers"]}) == len(pod["initContainers"]), "duplicate names"
    assert server["image"] == spec(model).image and pod["serviceAccountName"] == model.name, server
    validate(worker)


def test_workers_read_the_variants_as_the_server_parses_them(eu_config: StackConfig) -> None:
    # Every shipped model's variants, in the serving image's own config.yaml model: the contract between them.
    assert len(eu_config.models) >= 2, [m.name for m in eu_config.models]
    for model in eu_config.models:
        config = async_inference.variants_config(model)
        parsed = ServerModelConfig.model_validate(yaml.safe_load(config["data"]["config.yaml"]))
        assert parsed.variants is not None and parsed.variants.weights == dict(model.variants.weights), parsed
        assert len(parsed.variants.routes) == len(model.variants.routes), parsed
    validate(async_inference.variants_config(eu_config.models[0]))


def test_workers_mount_the_variants_beside_the_versions(model: ModelConfig) -> None:
    pod = async_inference.worker_deployment(spec(model))["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    mount = mounts[f"/models/{model.name}/config.yaml"]
    assert mount["subPath"] == "config.yaml" and mount["readOnly"] is True, mount
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mount["name"]]["configMap"]["name"] == async_inference.variants_name(model), volumes


def test_scaling_follows_the_backlog_of_the_workers_group(model: ModelConfig) -> None:
    scaled = async_inference.scaled_object(model, HOST)["spec"]
    workers = model.async_workers
    assert workers is not None
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (
        workers.min_workers,
        workers.max_workers,
    )
    assert (
        scaled["scaleTargetRef"]["name"] == async_inference.worker_deployment(spec(model))["metadata"]["name"]
    )
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "redis-streams", trigger
    assert trigger["metadata"] == {
        "address": f"{HOST}:6379",
        "stream": serving.job_stream(model),
        "consumerGroup": "workers",
        "lagCount": str(workers.backlog_per_worker),
        "enableTLS": "true",
    }, "scale on the lag (undelivered backlog) of the workers' group, over TLS"
    assert "pendingEntriesCount" not in trigger["metadata"], "pending entries never exceed a batch per worker"
    auth = async_inference.trigger_authentication(model)
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"], trigger
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref == {"parameter": "password", "name": serving.queue_secret_name(model), "key": "password"}, ref


def test_the_queue_secret_is_synced_from_secrets_manager(model: ModelConfig) -> None:
    secret = async_inference.external_secret(model, HOST, SECRET)
    spec_ = secret["spec"]
    assert spec_["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": "job-queue"}, spec_
    assert spec_["data"] == [{"secretKey": "token", "remoteRef": {"key": SECRET}}], spec_["data"]
    template = spec_["target"]["template"]["data"]
    assert template[serving.QUEUE_URL_KEY] == f"rediss://:{{{{ .token }}}}@{HOST}:6379/0", template
    assert spec_["target"]["name"] == serving.queue_secret_name(model), spec_["target"]
    assert secret["metadata"]["annotations"] == {"pulumi.com/waitFor": "condition=Ready"}, secret["metadata"]


def test_the_mesh_lets_the_tenant_reach_the_queue_host_alone(model: ModelConfig) -> None:
    entry = async_inference.queue_service_entry(model, HOST)
    assert entry["metadata"]["namespace"] == model.tenant, entry["metadata"]
    assert entry["spec"]["hosts"] == [HOST] and entry["spec"]["exportTo"] == ["."], entry["spec"]
    assert entry["spec"]["ports"] == [{"number": 6379, "name": "tls-redis", "protocol": "TLS"}], entry["spec"]


def test_workers_take_no_traffic_and_reach_only_what_they_need(model: ModelConfig) -> None:
    policy = async_inference.network_policy(model)
    validate(policy)
    assert policy["spec"]["podSelector"]["matchLabels"] == async_inference.worker_labels(model)
    assert policy["spec"]["ingress"] == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "ports": [{"protocol": "TCP", "port": serving.MERGED_METRICS_PORT}],
        }
    ], "only Prometheus' scrape may reach a worker"
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert ports == {53, 15012, 15017, 443, 6379}, ports


def test_a_model_without_async_has_no_scaler(sync_only: ModelConfig) -> None:
    with pytest.raises(ValueError, match="takes no async requests"):
        async_inference.scaled_object(sync_only, HOST)


CALLBACK_HOSTS = ("hooks.example.eu", "callbacks.partner.example.eu:8443")
CALLBACK_SECRET = SECRET.replace("auth-token", "callback-key")


def with_callbacks(model: ModelConfig) -> serving.ServingSpec:
    return dataclasses.replace(spec(model), callback_hosts=CALLBACK_HOSTS)


def test_pods_find_the_result_bucket_in_the_store_config_map(model: ModelConfig) -> None:
    for pod in (
        serving.deployment(spec(model), "1")["spec"]["template"]["spec"],
        async_inference.worker_deployment(spec(model))["spec"]["template"]["spec"],
    ):
        found = env(pod["containers"][0])
        assert found["SERVING_ASYNC_OBJECT_STORE"] == {
            "configMapKeyRef": {"name": serving.store_config_name(model), "key": serving.JOB_STORE_KEY}
        }, found
        assert found["SERVING_ASYNC_RESULT_TTL_S"] == str(ASYNC_RESULT_TTL_SECONDS), (
            "the pods' TTL and the bucket's expiry of results must be the same figure"
        )
    assert serving.job_store_url("acme-eu-serving-async-eu-central-1", model) == (
        "s3://acme-eu-serving-async-eu-central-1/jobs/ticket-router"
    )


def test_without_callback_hosts_pods_get_no_callbacks(model: ModelConfig) -> None:
    for pod in (
        serving.deployment(spec(model), "1")["spec"]["template"]["spec"],
        async_inference.worker_deployment(spec(model))["spec"]["template"]["spec"],
    ):
        found = env(pod["containers"][0])
        assert not [n for n in found if n.startswith("SERVING_ASYNC_CALLBACK")], found
        assert "callback-key" not in {v["name"] for v in pod["volumes"]}, pod["volumes"]


def test_a_sync_model_gets_no_callbacks_even_where_hosts_are_allowed(sync_only: ModelConfig) -> None:
    pod = serving.deployment(with_callbacks(sync_only), "1")["spec"]["template"]["spec"]
    assert not [n for n in env(pod["containers"][0]) if n.startswith("SERVING_ASYNC")], pod["containers"][0]
    assert "callback-key" not in {v["name"] for v in pod["volumes"]}, pod["volumes"]


@pytest.mark.parametrize("kind", ["serving", "worker"])
def test_pods_get_the_callback_hosts_and_the_key_as_a_read_only_file(model: ModelConfig, kind: str) -> None:
    built = (
        serving.deployment(with_callbacks(model), "1")
        if kind == "serving"
        else async_inference.worker_deployment(with_callbacks(model))
    )
    pod = built["spec"]["template"]["spec"]
    server = pod["containers"][0]
    found = env(server)
    assert found["SERVING_ASYNC_CALLBACK_HOSTS"] == "hooks.example.eu,callbacks.partner.example.eu:8443", (
        found
    )
    path = found["SERVING_ASYNC_CALLBACK_SECRET_FILE"]
    (mount,) = [m for m in server["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] is True, mount
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == serving.callback_secret_name(model), volume
    assert volume["secret"]["items"] == [
        {"key": serving.CALLBACK_KEY_FILE, "path": path.rsplit("/", 1)[1]}
    ], volume
    assert volume["secret"]["defaultMode"] & 0o007 == 0, "the key must not be readable by other users"
    validate(built)


def test_the_callback_key_is_synced_from_secrets_manager(model: ModelConfig) -> None:
    secret = async_inference.callback_external_secret(model, CALLBACK_SECRET)
    validate(secret)
    spec_ = secret["spec"]
    assert spec_["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": "job-queue"}, spec_
    assert spec_["data"] == [{"secretKey": serving.CALLBACK_KEY_FILE, "remoteRef": {"key": CALLBACK_SECRET}}]
    assert spec_["target"]["name"] == serving.callback_secret_name(model), spec_["target"]
    assert secret["metadata"]["namespace"] == model.tenant, secret["metadata"]
    assert secret["metadata"]["annotations"] == {"pulumi.com/waitFor": "condition=Ready"}, secret["metadata"]


def test_the_queue_secret_validates_against_its_crd(model: ModelConfig) -> None:
    validate(async_inference.external_secret(model, HOST, SECRET))


def test_the_mesh_lets_the_workers_reach_each_callback_host_on_its_port(model: ModelConfig) -> None:
    entries = async_inference.callback_service_entries(model, CALLBACK_HOSTS)
    for entry in entries:
        validate(entry)
        assert entry["metadata"]["namespace"] == model.tenant and entry["spec"]["exportTo"] == ["."], entry
        assert entry["spec"]["location"] == "MESH_EXTERNAL" and entry["spec"]["resolution"] == "DNS", entry
    found = {(e["spec"]["hosts"][0], e["spec"]["ports"][0]["number"]) for e in entries}
    assert found == {("hooks.example.eu", 443), ("callbacks.partner.example.eu", 8443)}, found
    assert len({e["metadata"]["name"] for e in entries}) == len(entries), "two entries with one name"


def test_workers_may_reach_a_callback_hosts_own_port(model: ModelConfig) -> None:
    policy = async_inference.network_policy(model, CALLBACK_HOSTS)
    validate(policy)
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert ports == {53, 15012, 15017, 443, 6379, 8443}, ports
