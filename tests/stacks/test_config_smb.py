"""The smb profile's stack file keys (stacks/config_smb.py): a model's `sagemaker` block, the `api` block,
and the cluster keys an smb stack refuses. Each rule: the shipped file passes, a violation names file, key and
reason."""

from typing import Any

import pytest

from stacks.config_smb import SERVERLESS_REFUSAL
from stacks.settings_smb import ApiConfig, EndpointAlarms, EndpointInstances
from tests.stacks.test_config_async import fails, parse, raw

MODEL = "model-serving.models[0]"


def model(values: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = values["models"][0]
    return first


def test_shipped_smb_stacks_parse_into_endpoints_and_an_api() -> None:
    eu, ae = parse(*raw("smb-eu"), "smb-eu"), parse(*raw("smb-ae"), "smb-ae")
    hosting = eu.models[0].sagemaker
    assert hosting is not None and "Serverless" in hosting.reason, hosting
    assert hosting.instances == EndpointInstances(
        instance_type="ml.c6i.large", min_instances=1, max_instances=3, invocations_per_instance=1200
    )
    assert hosting.capture_percent == 10 and hosting.alarms == EndpointAlarms(
        error_rate_percent=1, latency_p99_ms=250
    )
    assert eu.api == ApiConfig(proxy_concurrency=50, proxy_timeout_seconds=29, custom_domain=True), eu.api
    assert ae.api is not None and not ae.api.custom_domain, ae.api
    assert (eu.cluster, eu.runner, eu.identity) == (None, None, None), "smb stacks run no cluster"
    assert ae.regions[0].region == "me-central-1" and ae.jurisdiction == "AE", ae.regions


def test_standard_stacks_have_no_endpoint_or_api() -> None:
    cfg = parse(*raw("eu-prod"), "eu-prod")
    assert cfg.api is None and all(m.sagemaker is None for m in cfg.models), cfg.api


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        (
            lambda m: m["sagemaker"].update(serverless={"memoryMiB": 2048, "maxConcurrency": 5}),
            f"{MODEL}.sagemaker.serverless",
            SERVERLESS_REFUSAL,
        ),
        (lambda m: m.pop("sagemaker"), f"{MODEL}.sagemaker", "is required"),
        (lambda m: m["sagemaker"].update(reason="cheap"), f"{MODEL}.sagemaker.reason", "must say why"),
        (
            lambda m: m["sagemaker"]["instances"].update(type="ml.m5d.large"),
            f"{MODEL}.sagemaker.instances.type",
            "local NVMe disks",
        ),
        (
            lambda m: m["sagemaker"]["instances"].update(min=0),
            f"{MODEL}.sagemaker.instances.min",
            "outside 1..100",
        ),
        (
            lambda m: m["sagemaker"]["instances"].update(max=0),
            f"{MODEL}.sagemaker.instances.max",
            "outside 1..100",
        ),
        (
            lambda m: m["sagemaker"].update(dataCapturePercent=0),
            f"{MODEL}.sagemaker.dataCapturePercent",
            "outside",
        ),
        (
            lambda m: m["sagemaker"]["alarms"].update(errorRatePercent=0),
            f"{MODEL}.sagemaker.alarms.errorRatePercent",
            "above 0",
        ),
        (
            lambda m: m["sagemaker"]["alarms"].pop("latencyP99Ms"),
            f"{MODEL}.sagemaker.alarms.latencyP99Ms",
            "required",
        ),
        (lambda m: m["sagemaker"].update(gpu=True), f"{MODEL}.sagemaker.gpu", "is not a key"),
        (
            lambda m: m["variants"].update(
                weights={str(v): 0 if v > 1 else 100 for v in range(1, 7)}, routes=[], sticky=None
            ),
            f"{MODEL}.variants",
            "at most 5 versions",
        ),
    ],
)
def test_model_sagemaker_refusals(change: Any, key: str, reason: str) -> None:
    values, region = raw("smb-eu")
    change(model(values))
    error = fails(values, region, "smb-eu")
    assert error.key == key and reason in error.reason, error


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        (lambda v: v.pop("api"), "model-serving.api", "is required"),
        (
            lambda v: v["api"].update(proxyTimeoutSeconds=30),
            "model-serving.api.proxyTimeoutSeconds",
            "outside 1..29",
        ),
        (lambda v: v["api"].update(customDomain="yes"), "model-serving.api.customDomain", "true or false"),
        (
            lambda v: v.update(cluster={"kubernetesVersion": "1.35"}),
            "model-serving.cluster",
            "no EKS cluster",
        ),
        (lambda v: v.update(runner={"githubRepository": "x"}), "model-serving.runner", "no private cluster"),
        (lambda v: v.update(identity={"issuerUrl": "https://x"}), "model-serving.identity", "no cluster"),
    ],
)
def test_stack_refusals(change: Any, key: str, reason: str) -> None:
    values, region = raw("smb-ae")
    change(values)
    error = fails(values, region, "smb-ae")
    assert error.key == key and reason in error.reason, error


def test_custom_domain_needs_the_gateways_host() -> None:
    values, region = raw("smb-eu")
    values["gateway"]["apiHost"] = ""
    error = fails(values, region, "smb-eu")
    assert error.key == "model-serving.gateway.apiHost", error


@pytest.mark.parametrize(("key", "value"), [("api", {"proxyConcurrency": 1}), ("sagemaker", None)])
def test_smb_keys_mean_nothing_in_a_standard_stack(key: str, value: Any) -> None:
    values, region = raw("eu-prod")
    if key == "api":
        values["api"] = value
        expected = "model-serving.api"
    else:
        model(values)["sagemaker"] = {"reason": "x y z"}
        expected = f"{MODEL}.sagemaker"
    error = fails(values, region, "eu-prod")
    assert error.key == expected and "has no meaning for profile standard" in error.reason, error
