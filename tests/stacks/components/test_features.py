"""Features built alone under the mocks: a ConfigMap per namespace with the region's bucket, and the CronJob
created after its ServiceAccount and ConfigMap, with infra's role."""

from typing import Any

import pulumi
import pytest
import yaml

from stacks.components.features import Features, FeaturesArgs
from tests.stacks.conftest import Built, build_component

ROLE = "arn:aws:iam::123456789012:role/eu-prod-eu-central-1-feature-materialize"
IMAGE = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/model-serving/retrain@sha256:" + "b" * 64


def _args(**overrides: Any) -> FeaturesArgs:
    values: dict[str, Any] = {
        "stack": "eu-prod",
        "project": "model_serving",
        "region": "eu-central-1",
        "bucket": pulumi.Output.from_input("acme-models-eu-central-1"),
        "namespaces": ("payments", "support"),
        "job_namespace": "payments",
        "schedule": "*/30 * * * *",
        "image": pulumi.Output.from_input(IMAGE),
        "role_arn": pulumi.Output.from_input(ROLE),
    } | overrides
    return FeaturesArgs(**values)


@pytest.fixture(scope="module")
def built() -> Built:
    return build_component(lambda opts: Features("features", _args(), opts))


def test_a_config_map_per_namespace_with_the_regions_bucket(built: Built) -> None:
    maps = {m["metadata"]["namespace"]: m for m in built.kinds("ConfigMap")}
    assert sorted(maps) == ["payments", "support"], sorted(maps)
    for namespace, cm in maps.items():
        config = yaml.safe_load(cm["data"]["feature_store.yaml"])
        assert config["registry"]["path"] == "s3://acme-models-eu-central-1/feast/registry.db", namespace
        assert config["online_store"]["region"] == "eu-central-1", namespace


def test_the_cronjob_runs_in_the_jobs_namespace_with_infras_role(built: Built) -> None:
    (job,) = built.kinds("CronJob")
    assert job["metadata"]["namespace"] == "payments", job["metadata"]
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == IMAGE, pod["containers"][0]
    (apply,) = pod["initContainers"]
    assert apply["image"] == IMAGE, apply
    assert apply["command"][-2:] == ["--offline-root", "s3://acme-models-eu-central-1/features/"], (
        "the registry is seeded with sources in this region's model bucket"
    )
    (account,) = built.kinds("ServiceAccount")
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": ROLE}, account["metadata"]


def test_the_cronjob_waits_for_its_account_and_its_config_map(built: Built) -> None:
    job = built.one("kubernetes:batch/v1:CronJob")
    names = {u.rsplit("::", 1)[1] for u in job.dependencies}
    assert {"features-sa", "features-config-payments"} <= names, names


def test_a_job_namespace_without_a_config_map_is_refused() -> None:
    with pytest.raises(Exception, match="gets no feature-store ConfigMap"):
        build_component(lambda opts: Features("features", _args(namespaces=("support",)), opts))
