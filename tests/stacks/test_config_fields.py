"""Every key of a valid stack file lands in its field of the typed config, unchanged, or takes its default.

The reference below reads a stack file's keys straight into the settings dataclasses, without any of
the checks: a valid file must parse to exactly that. It is applied to every shipped stack file, and
to eu-prod and onprem-ae with every optional key given a value of its own, so that no field is
left unchecked because no shipped file sets it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from stacks.config import parse_config
from stacks.preview.run import stack_names
from stacks.settings import (
    AlertingConfig,
    AsyncWorkers,
    ClusterConfig,
    Fault,
    FeaturesConfig,
    GatewayConfig,
    IdentityConfig,
    ImageConfig,
    JobQueueConfig,
    ModelConfig,
    ModelFeatures,
    NodeGroupConfig,
    ObservabilityConfig,
    OnPremConfig,
    OnPremStore,
    RateLimit,
    Receiver,
    RegionConfig,
    Rollout,
    RunnerConfig,
    SageMakerAsyncConfig,
    Shadow,
    StackConfig,
    StateConfig,
    StoreConfig,
    TenantConfig,
    VariantRoute,
    Variants,
)
from stacks.settings_smb import ApiConfig, EndpointAlarms, EndpointInstances, SageMakerHosting
from tests.stacks.test_config import raw


def strings(values: dict[str, Any], key: str) -> tuple[str, ...]:
    return tuple(values.get(key) or ())


def cluster(c: dict[str, Any]) -> ClusterConfig:
    group = c["nodeGroup"]
    return ClusterConfig(
        kubernetes_version=c["kubernetesVersion"],
        public_access_cidrs=strings(c, "publicAccessCidrs"),
        break_glass_role_arn=c["breakGlassRoleArn"],
        create_autoscaling_service_linked_role=c.get("createAutoscalingServiceLinkedRole", True),
        node_group=NodeGroupConfig(
            instance_type=group["instanceType"],
            min_size=group["minSize"],
            max_size=group["maxSize"],
            desired_size=group["desiredSize"],
            disk_gib=group["diskGiB"],
        ),
    )


def gateway(g: dict[str, Any]) -> GatewayConfig:
    return GatewayConfig(
        api_host=g["apiHost"],
        zone_id=g["zoneId"],
        tls_credential_name=g.get("tlsCredentialName", ""),
        jwt_issuer=g["jwtIssuer"],
        jwks_uri=g["jwksUri"],
        audiences=tuple(g["audiences"]),
        allowed_cidrs=strings(g, "allowedCidrs") or ("0.0.0.0/0",),
    )


def image(i: dict[str, Any], on_aws: bool) -> ImageConfig:
    return ImageConfig(
        registry_account=i["registryAccount"] if on_aws else None,
        runner_repository=i.get("runnerRepository") if on_aws else None,
        runner_digest=i.get("runnerDigest") if on_aws else None,
        repository=i["repository"],
        digest=i["digest"],
        retrain_repository=i["retrainRepository"],
        retrain_digest=i["retrainDigest"],
    )


def observability(o: dict[str, Any]) -> ObservabilityConfig:
    alerting = o["alerting"]
    return ObservabilityConfig(
        log_retention_days=o["logRetentionDays"],
        prometheus_retention_days=o["prometheusRetentionDays"],
        prometheus_storage_gib=o["prometheusStorageGiB"],
        tracing_sampling_percent=float(o.get("tracingSamplingPercent", 1.0)),
        otlp_endpoint=o.get("otlpEndpoint"),
        alerting=AlertingConfig(
            receivers=tuple(
                Receiver(name=r["name"], webhook_url=r.get("webhookUrl"), email=r.get("email"))
                for r in alerting["receivers"]
            ),
            smarthost=alerting.get("smarthost"),
            email_from=alerting.get("emailFrom"),
        ),
    )


def state(s: dict[str, Any], region: str | None) -> StateConfig:
    return StateConfig(
        backend=s["backend"], secrets_provider=s["secretsProvider"], region=region, key_arn=s.get("keyArn")
    )


def onprem(o: dict[str, Any]) -> OnPremConfig:
    return OnPremConfig(
        location=o["location"],
        kubeconfig=o.get("kubeconfig"),
        context=o.get("context"),
        registry=o["registry"],
        storage_class=o["storageClass"],
        store=OnPremStore(
            endpoint=o["store"]["endpoint"],
            bucket=o["store"]["bucket"],
            credentials_secret=o["store"]["credentialsSecret"],
        ),
    )


def tenant(t: dict[str, Any]) -> TenantConfig:
    return TenantConfig(
        name=t["name"],
        deployer_groups=strings(t, "deployerGroups"),
        viewer_groups=strings(t, "viewerGroups"),
        cpu=t["quota"]["cpu"],
        memory=t["quota"]["memory"],
        pods=t["quota"]["pods"],
    )


def variants(v: dict[str, Any]) -> Variants:
    shadow = v.get("shadow")
    faults = v.get("faults") or {}
    return Variants(
        weights=tuple(sorted(((str(k), w) for k, w in v["weights"].items()), key=lambda kv: int(kv[0]))),
        sticky_header=v["sticky"]["header"] if "sticky" in v else None,
        routes=tuple(
            VariantRoute(header=r["header"], value=r["value"], version=str(r["version"]))
            for r in v.get("routes") or ()
        ),
        shadow=Shadow(version=str(shadow["version"]), percent=shadow["percent"]) if shadow else None,
        faults=tuple(
            (str(k), Fault(delay_ms=f.get("delay_ms", 0), error_ratio=float(f.get("error_ratio", 0.0))))
            for k, f in sorted(faults.items(), key=lambda kv: int(kv[0]))
        ),
    )


def async_workers(a: dict[str, Any] | None) -> AsyncWorkers | None:
    if a is None:
        return None
    return AsyncWorkers(
        min_workers=a["minWorkers"],
        max_workers=a["maxWorkers"],
        backlog_per_worker=a["backlogPerWorker"],
        max_queued=a["maxQueued"],
    )


def job_queue(q: dict[str, Any] | None) -> JobQueueConfig | None:
    if q is None:
        return None
    return JobQueueConfig(
        node_type=q["nodeType"],
        engine_version=q["engineVersion"],
        replicas=q["replicas"],
        snapshot_retention_days=q["snapshotRetentionDays"],
        input_retention_days=q["inputRetentionDays"],
        callback_hosts=tuple(q.get("callbacks", {}).get("allowedHosts", ())),
        create_service_linked_role=q.get("createServiceLinkedRole", True),
    )


def sagemaker_async(a: dict[str, Any] | None) -> SageMakerAsyncConfig | None:
    if a is None:
        return None
    return SageMakerAsyncConfig(
        instance_type=a["instanceType"],
        instance_count=a["instanceCount"],
        max_concurrent_invocations=a["maxConcurrentInvocations"],
        min_instances=a["minInstances"],
        max_instances=a["maxInstances"],
        backlog_per_instance=a.get("backlogPerInstance", 5),
        input_retention_days=a.get("inputRetentionDays", 7),
        create_autoscaling_service_linked_role=a.get("createAutoscalingServiceLinkedRole", True),
    )


def features(f: dict[str, Any] | None, models: list[dict[str, Any]]) -> FeaturesConfig | None:
    """Services one per version of the model (the contract's names); the job in the first model's tenant
    unless `tenant` is given."""
    if f is None:
        return None
    by_name = {m["name"]: m for m in models}
    return FeaturesConfig(
        project=f.get("project", "model_serving"),
        schedule=f["schedule"],
        tenant=f.get("tenant", by_name[f["models"][0]["name"]]["tenant"]),
        stale_after_seconds=f["staleAfterMinutes"] * 60,
        models=tuple(
            ModelFeatures(
                model=e["name"],
                services=tuple(
                    f"{e['name'].replace('-', '_')}_v{v}"
                    for v in sorted(by_name[e["name"]]["variants"]["weights"], key=int)
                ),
                feature_views=tuple(sorted(e["featureViews"])),
            )
            for e in f["models"]
        ),
    )


def model(m: dict[str, Any], profile: str) -> ModelConfig:
    """An smb model's `async` block selects SageMaker; elsewhere it sizes the queue's workers."""
    rollout = m.get("rollout")
    smb = profile == "smb"
    return ModelConfig(
        name=m["name"],
        tenant=m["tenant"],
        scope=m["scope"],
        rate_limit=RateLimit(requests_per_second=m["rateLimit"]["requestsPerSecond"]),
        min_replicas=m["replicas"]["min"],
        max_replicas=m["replicas"]["max"],
        cpu=m["resources"]["cpu"],
        memory=m["resources"]["memory"],
        workers=m["workers"],
        variants=variants(m["variants"]),
        async_workers=None if smb else async_workers(m.get("async")),
        sagemaker_async=smb and m.get("async") is not None,
        sagemaker=hosting(m["sagemaker"]) if smb else None,
        rollout=Rollout(
            steps=tuple(rollout["steps"]),
            min_samples=rollout["minSamples"],
            interval_seconds=rollout["intervalSeconds"],
            failed_checks=rollout["failedChecks"],
            settle_seconds=rollout.get("settleSeconds", 30),
            optional_metrics=tuple(sorted(set(rollout.get("optionalMetrics", [])))),
            holdback_percent=rollout.get("holdbackPercent", 0),
            guard_seconds=rollout.get("guardSeconds", 3600) if rollout.get("holdbackPercent") else 3600,
        )
        if rollout
        else None,
    )


def hosting(h: dict[str, Any]) -> SageMakerHosting:
    i, a = h["instances"], h["alarms"]
    return SageMakerHosting(
        reason=h["reason"],
        instances=EndpointInstances(
            instance_type=i["type"],
            min_instances=i["min"],
            max_instances=i["max"],
            invocations_per_instance=i["invocationsPerInstance"],
        ),
        capture_percent=h["dataCapturePercent"],
        alarms=EndpointAlarms(
            error_rate_percent=float(a["errorRatePercent"]), latency_p99_ms=a["latencyP99Ms"]
        ),
    )


def api(a: dict[str, Any] | None) -> ApiConfig | None:
    if a is None:
        return None
    return ApiConfig(
        proxy_concurrency=a["proxyConcurrency"],
        proxy_timeout_seconds=a["proxyTimeoutSeconds"],
        custom_domain=bool(a.get("customDomain", False)),
    )


def store(v: dict[str, Any]) -> StoreConfig:
    return StoreConfig(
        bucket_prefix=v["store"]["bucketPrefix"],
        inference_log_days=v["store"]["inferenceLogDays"],
        noncurrent_version_days=v["store"]["noncurrentVersionDays"],
    )


def aws_part(v: dict[str, Any], region: str | None) -> dict[str, Any]:
    regions = tuple(RegionConfig(region=r["region"], vpc_cidr=r["vpcCidr"]) for r in v.get("regions", ()))
    if v["profile"] == "smb":
        return {
            "regions": regions,
            "cluster": None,
            "identity": None,
            "store": store(v),
            "account_id": v["accountId"],
            "runner": None,
            "onprem": None,
            "state": state(v["state"], region),
        }
    if v["profile"] == "onprem":
        return {
            "regions": (),
            "cluster": None,
            "identity": None,
            "store": None,
            "account_id": None,
            "runner": None,
            "onprem": onprem(v["onprem"]),
            "state": state(v["state"], None),
        }
    return {
        "regions": tuple(RegionConfig(region=r["region"], vpc_cidr=r["vpcCidr"]) for r in v["regions"]),
        "cluster": cluster(v["cluster"]),
        "identity": IdentityConfig(
            issuer_url=v["identity"]["issuerUrl"],
            client_id=v["identity"]["clientId"],
            groups_claim=v["identity"]["groupsClaim"],
        ),
        "store": StoreConfig(
            bucket_prefix=v["store"]["bucketPrefix"],
            inference_log_days=v["store"]["inferenceLogDays"],
            noncurrent_version_days=v["store"]["noncurrentVersionDays"],
        ),
        "account_id": v["accountId"],
        "runner": RunnerConfig(
            github_repository=v["runner"]["githubRepository"], connection_arn=v["runner"]["connectionArn"]
        ),
        "onprem": None,
        "egress_domains": strings(v.get("egress") or {}, "allowedDomains"),
        "state": state(v["state"], region),
    }


def expected(v: dict[str, Any], stack: str, region: str | None) -> StackConfig:
    """The stack file's keys read straight into the settings, with every default, and no check at all."""
    return StackConfig(
        stack=stack,
        jurisdiction=v["jurisdiction"],
        profile=v["profile"],
        owner=v["owner"],
        data_classification=v["dataClassification"],
        gateway=gateway(v["gateway"]),
        image=image(v["image"], v["profile"] != "onprem"),
        observability=observability(v["observability"]),
        tenants=tuple(tenant(t) for t in v["tenants"]),
        models=tuple(model(m, v["profile"]) for m in v["models"]),
        job_queue=job_queue(v.get("asyncInference")),
        sagemaker_async=sagemaker_async(v.get("sagemakerAsync")),
        features=features(v.get("features"), v["models"]),
        api=api(v.get("api")),
        **aws_part(v, region),
    )


def every_option_set(stack: str) -> tuple[dict[str, Any], str | None]:
    """A shipped stack file with every optional key given a value no default has."""
    values, region = raw(stack)
    alerting = values["observability"]["alerting"]
    alerting["receivers"].append({"name": "platform-mail", "email": "oncall@example.eu"})
    alerting.update(smarthost="smtp.example.eu:587", emailFrom="alerts@example.eu")
    values["observability"].update(tracingSamplingPercent=12.5, otlpEndpoint="https://traces.example.eu:4318")
    values["gateway"]["allowedCidrs"] = ["10.0.0.0/8", "192.0.2.0/24"]
    classifier = values["models"][0]["variants"]
    # Versions 10 and 9: sorted as numbers, not as strings, whatever order the file lists them in.
    classifier["weights"] = {"10": 30, "2": 60, "9": 10}
    classifier["routes"] = [
        {"header": "x-segment", "value": "enterprise", "version": "10"},
        {"header": "x-beta", "value": "yes", "version": 9},
    ]
    classifier["shadow"] = {"version": 9, "percent": 7}
    classifier["faults"] = {
        "10": {"delay_ms": 250},
        "9": {"error_ratio": 0.25},
        "2": {"delay_ms": 5, "error_ratio": 1},
    }
    if values["profile"] == "onprem":
        values["onprem"].update(kubeconfig="~/.kube/dc1", context="dc1-admin")
    else:
        values["cluster"]["publicAccessCidrs"] = ["198.51.100.0/24"]
        values["cluster"]["createAutoscalingServiceLinkedRole"] = False
        values["egress"] = {"allowedDomains": ["api.example.eu", "pypi.internal.example.eu"]}
        values["asyncInference"]["createServiceLinkedRole"] = False
        values["asyncInference"]["callbacks"] = {
            "allowedHosts": ["hooks.example.eu", "callbacks.partner.example.eu:8443"]
        }
        values["features"].update(project="acme_features", tenant="support")
    for t in values["tenants"]:
        t["quota"] = {"cpu": "1000", "memory": "4000Gi", "pods": 1000}
    return values, region


def every_option_left_out(stack: str) -> tuple[dict[str, Any], str | None]:
    """A shipped stack file without any key that may be left out."""
    values, region = raw(stack)
    values["observability"].pop("tracingSamplingPercent")
    for t in values["tenants"]:
        t.pop("deployerGroups", None)
        t.pop("viewerGroups", None)
    for m in values["models"]:
        for key in ("sticky", "routes"):
            m["variants"].pop(key, None)
        m.pop("rollout", None)
        m.pop("async", None)
    values.pop("asyncInference", None)
    values.pop("features", None)
    if values["profile"] != "onprem":
        values["cluster"].pop("publicAccessCidrs")
    return values, region


CASES = [pytest.param(stack, raw, id=f"{stack} as shipped") for stack in stack_names()] + [
    pytest.param(stack, make, id=f"{stack} {how}")
    for stack in ("eu-prod", "onprem-ae")
    for how, make in (
        ("every option set", every_option_set),
        ("every option left out", every_option_left_out),
    )
]


@pytest.mark.parametrize(("stack", "make"), CASES)
def test_every_key_lands_in_its_field_unchanged(stack: str, make: Any) -> None:
    values, region = make(stack)
    want = expected(copy.deepcopy(values), stack, region)
    got = parse_config(values, stack=stack, source=f"Pulumi.{stack}.yaml", aws_region=region)
    for name in StackConfig.__dataclass_fields__:
        assert getattr(got, name) == getattr(want, name), f"{stack}: {name}: {getattr(got, name)!r}"
    assert got == want, f"{stack}: the parsed config differs from the stack file"


Read = Callable[[StackConfig], Any]
OPTIONS: dict[str, Read] = {
    "tracingSamplingPercent": lambda c: c.observability.tracing_sampling_percent,
    "smarthost": lambda c: c.observability.alerting.smarthost,
    "emailFrom": lambda c: c.observability.alerting.email_from,
    "allowedCidrs": lambda c: c.gateway.allowed_cidrs,
    "viewerGroups": lambda c: c.tenants[0].viewer_groups,
    "sticky": lambda c: c.models[0].variants.sticky_header,
    "routes": lambda c: c.models[0].variants.routes,
    "shadow": lambda c: c.models[0].variants.shadow,
    "faults": lambda c: c.models[0].variants.faults,
    "rollout": lambda c: c.models[0].rollout,
}
ONPREM_OPTIONS: dict[str, Read] = {
    "kubeconfig": lambda c: c.onprem and c.onprem.kubeconfig,
    "context": lambda c: c.onprem and c.onprem.context,
}
AWS_OPTIONS: dict[str, Read] = {
    "publicAccessCidrs": lambda c: c.cluster and c.cluster.public_access_cidrs,
    "createAutoscalingServiceLinkedRole": lambda c: (
        c.cluster and c.cluster.create_autoscaling_service_linked_role
    ),
    "egress": lambda c: c.egress_domains,
    "async": lambda c: [m.async_workers for m in c.models],
    "asyncInference": lambda c: c.job_queue,
    "features": lambda c: c.features,
}


def parsed(stack: str, make: Callable[[str], tuple[dict[str, Any], str | None]]) -> StackConfig:
    values, region = make(stack)
    return parse_config(values, stack=stack, source=f"Pulumi.{stack}.yaml", aws_region=region)


@pytest.mark.parametrize(("stack", "options"), [("eu-prod", AWS_OPTIONS), ("onprem-ae", ONPREM_OPTIONS)])
def test_every_option_set_differs_from_its_default(stack: str, options: dict[str, Read]) -> None:
    # Otherwise the cases above could not tell a key that is read from one that is ignored.
    full, bare = parsed(stack, every_option_set), parsed(stack, every_option_left_out)
    same = [name for name, read in (OPTIONS | options).items() if read(full) == read(bare)]
    assert same == [], f"{stack}: options set to their defaults: {same}"
