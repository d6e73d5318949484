"""The retrain receiver built alone from Outputs (image and bucket are only known at deploy time), and the
monitoring stack's Alertmanager config routing to it."""

import pulumi
import pytest
import yaml

from stacks.components.monitoring import Monitoring, MonitoringArgs
from stacks.components.retrain import RetrainReceiver, RetrainReceiverArgs
from stacks.manifests import retrain as rt
from tests.stacks.conftest import Built, build_component
from tests.stacks.schemas import validate

REGISTRY = "123456789012.dkr.ecr.eu-central-1.amazonaws.com"
IMAGE = f"{REGISTRY}/model-serving@sha256:" + "b" * 64
BUCKET = "acme-models-eu-central-1"
OTHER_BUCKET = "acme-models-eu-west-1"


@pytest.fixture(scope="module")
def built() -> Built:
    args = RetrainReceiverArgs(
        image=pulumi.Output.from_input(IMAGE),
        bucket=pulumi.Output.from_input(BUCKET),
        models=("tabular-classifier", "text-model"),
        storage_class="encrypted-gp3",
        model_buckets=(pulumi.Output.from_input(BUCKET), pulumi.Output.from_input(OTHER_BUCKET)),
    )
    return build_component(lambda opts: RetrainReceiver("rt", args, opts))


def test_every_object_is_created_and_validates(built: Built) -> None:
    kinds = sorted(r.type.rsplit(":", 1)[-1] for r in built.registrations if r.type.startswith("kubernetes:"))
    expected = [
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "Service",
        "ServiceAccount",
    ]
    assert kinds == expected, kinds
    for kind in expected:
        (inputs,) = built.kinds(kind)
        apis = {"Deployment": "apps/v1", "NetworkPolicy": "networking.k8s.io/v1"}
        validate({"apiVersion": apis.get(kind, "v1"), "kind": kind} | inputs)


def test_the_config_names_each_models_dataset_in_the_bucket(built: Built) -> None:
    (config,) = built.kinds("ConfigMap")
    models = yaml.safe_load(config["data"]["receiver.yaml"])["models"]
    assert models == {
        m: {"data": f"s3://{BUCKET}/training/{m}/labelled.csv"} for m in ("tabular-classifier", "text-model")
    }, models


def test_the_deployment_runs_the_image_after_its_account_config_and_volume(built: Built) -> None:
    deployment = built.one("kubernetes:apps/v1:Deployment")
    [container] = deployment.inputs["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IMAGE, container["image"]
    depends = {u.split("::")[-1] for u in deployment.dependencies}
    assert {"rt-sa", "rt-config", "rt-state"} <= depends, depends


def test_the_monitoring_stacks_alertmanager_routes_retraining_alerts_to_it() -> None:
    args = MonitoringArgs(
        registry=REGISTRY, key_arn=None, retention_days=15, storage_gib=100,
        webhook_urls=("https://hooks.example.eu/T0/secret",), retrain_webhook=rt.webhook_url(),
    )  # fmt: skip
    monitoring = build_component(lambda opts: Monitoring("mon", args, opts))
    secret = monitoring.one("kubernetes:core/v1:Secret").inputs["stringData"]["value"]
    config = yaml.safe_load(secret["alertmanager.yaml"])
    urls = [w["url"] for r in config["receivers"] for w in r.get("webhook_configs", [])]
    assert rt.webhook_url() in urls, urls


def test_the_retrain_publishes_to_every_model_bucket_its_own_first(built: Built) -> None:
    (config,) = built.kinds("ConfigMap")
    args = yaml.safe_load(config["data"]["receiver.yaml"])["args"]
    published = [args[i + 1] for i, arg in enumerate(args) if arg == "--publish-bucket"]
    assert published == [f"s3://{BUCKET}/models", f"s3://{OTHER_BUCKET}/models"], args
