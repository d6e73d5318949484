"""The platform layer (`cd stacks/platform && pulumi up -s <stack>`): wiring only, all inside the clusters.

For an AWS stack it deploys into each region's EKS cluster, knowing the infra layer only through its
StackReference outputs; for an `onprem-*` stack, into one existing cluster given by a kubeconfig. It creates
no AWS resource: identities it needs are IRSA roles infra made.
"""

import pulumi

from stacks.artifacts import load_lock
from stacks.components.addons import (
    AsyncInferenceAddons,
    AsyncInferenceAddonsArgs,
    Autoscaling,
    AutoscalingArgs,
    CertManager,
    CertManagerArgs,
    ClusterAutoscalerSettings,
    LoadBalancerController,
    LoadBalancerControllerArgs,
)
from stacks.components.admission import WorkloadAdmission, WorkloadAdmissionArgs
from stacks.components.async_workers import AsyncWorkers, AsyncWorkersArgs
from stacks.components.cluster import IDENTITY_GROUP_PREFIX
from stacks.components.features import Features, FeaturesArgs
from stacks.components.mesh import Mesh, MeshArgs
from stacks.components.model_serving import ModelServing, ModelServingArgs
from stacks.components.monitoring import (
    CloudWatchLogs,
    Monitoring,
    MonitoringArgs,
    Observability,
    ObservabilityArgs,
)
from stacks.components.retrain import RetrainReceiver, RetrainReceiverArgs
from stacks.components.rollout_controller import RolloutController, RolloutControllerArgs
from stacks.components.tenancy import Tenancy, TenancyArgs
from stacks.config import load_config
from stacks.contract import (
    ROLE_CLUSTER_AUTOSCALER,
    ROLE_EXTERNAL_SECRETS,
    ROLE_FEATURES,
    ROLE_FLUENT_BIT,
    ROLE_LB_CONTROLLER,
    ROLE_OTEL_COLLECTOR,
    ROLE_RETRAIN,
    model_role,
)
from stacks.manifests import retrain
from stacks.manifests.monitoring import STORAGE_CLASS
from stacks.manifests.observability import mesh_tracing_values
from stacks.manifests.serving import ServingSpec
from stacks.platform.targets import ClusterTarget, cluster_targets
from stacks.settings import StackConfig


def _aws_addons(target: ClusterTarget, opts: pulumi.ResourceOptions) -> list[pulumi.Resource]:
    """What only an EKS cluster runs: the load balancer controller that binds the gateway to infra's NLB."""
    eks = target.eks
    if eks is None:
        return []
    controller = LoadBalancerController(
        f"{target.name}-lb-controller",
        LoadBalancerControllerArgs(
            registry=target.registry,
            cluster_name=eks.field("cluster_name"),
            region=eks.region,
            vpc_id=eks.field("vpc_id"),
            role_arn=eks.role(ROLE_LB_CONTROLLER),
            target_group_arn=eks.field("target_group_arn"),
            nlb_security_group_id=eks.field("gateway_security_group_id"),
        ),
        opts=opts,
    )
    return [controller]


def _observability(cfg: StackConfig, target: ClusterTarget, opts: pulumi.ResourceOptions) -> Observability:
    eks = target.eks
    return Observability(
        f"{target.name}-observability",
        ObservabilityArgs(
            registry=target.registry,
            logs=None
            if eks is None
            else CloudWatchLogs(
                region=eks.region, log_group=eks.field("log_group"), role_arn=eks.role(ROLE_FLUENT_BIT)
            ),
            xray_region=None if eks is None else eks.region,
            otlp_endpoint=cfg.observability.otlp_endpoint if eks is None else None,
            collector_role_arn=None if eks is None else eks.role(ROLE_OTEL_COLLECTOR),
            sampling_percentage=cfg.observability.tracing_sampling_percent,
        ),
        opts=opts,
    )


def _monitoring(
    cfg: StackConfig, target: ClusterTarget, opts: pulumi.ResourceOptions, retrains: bool
) -> Monitoring:
    alerting, eks = cfg.observability.alerting, target.eks
    storage = {} if cfg.onprem is None else {"storage_class": cfg.onprem.storage_class}
    return Monitoring(
        f"{target.name}-monitoring",
        MonitoringArgs(
            registry=target.registry,
            key_arn=None if eks is None else eks.field("volume_key_arn"),
            retention_days=cfg.observability.prometheus_retention_days,
            storage_gib=cfg.observability.prometheus_storage_gib,
            webhook_urls=tuple(
                pulumi.Output.secret(r.webhook_url) for r in alerting.receivers if r.webhook_url
            ),
            alert_emails=tuple(r.email for r in alerting.receivers if r.email),
            smtp_smarthost=alerting.smarthost or "",
            smtp_from=alerting.email_from or "",
            retrain_webhook=retrain.webhook_url() if retrains else None,
            feature_stale_after_seconds=cfg.features.stale_after_seconds if cfg.features else None,
            **storage,
        ),
        opts=opts,
    )


def model_bucket(cfg: StackConfig, target: ClusterTarget) -> pulumi.Input[str]:
    """The cluster's model bucket: its region's (infra's output), or the on-premises store's."""
    store = None if cfg.onprem is None else cfg.onprem.store
    return target.eks.field("model_bucket") if target.eks else (store.bucket if store else "")


def _retrain(
    cfg: StackConfig, target: ClusterTarget, monitoring: Monitoring, buckets: tuple[pulumi.Input[str], ...]
) -> RetrainReceiver:
    """The retrain receiver Alertmanager's retraining route points at, beside it in the monitoring
    namespace; it retrains every model of the stack from the labelled data in the model bucket, reads the
    serving version from that bucket and publishes each new version to every region's (`buckets`, this
    cluster's first), where the serving pods sync from; with infra's role for exactly that.

    Only the primary cluster runs one: a retrain publishes version N+1 to every region's bucket, so two
    receivers would race to the same version. The other regions' retraining alerts reach people only."""
    eks, store = target.eks, None if cfg.onprem is None else cfg.onprem.store
    return RetrainReceiver(
        f"{target.name}-retrain",
        RetrainReceiverArgs(
            image=pulumi.Output.from_input(target.registry).apply(cfg.image.retrain_image),
            bucket=model_bucket(cfg, target),
            model_buckets=buckets,
            models=tuple(m.name for m in cfg.models),
            storage_class=cfg.onprem.storage_class if cfg.onprem else STORAGE_CLASS,
            role_arn=eks.role(ROLE_RETRAIN) if eks else None,
            store_endpoint=store.endpoint if store else None,
            store_credentials_secret=store.credentials_secret if store else None,
            waits_for=(monitoring,),
        ),
        opts=pulumi.ResourceOptions(provider=target.provider),
    )


def _async_addons(cfg: StackConfig, target: ClusterTarget) -> AsyncInferenceAddons | None:
    """KEDA and the secret syncer, on the EKS clusters of a stack whose models take async requests (the
    queue is infra's, so there is none on premises)."""
    eks = target.eks
    if eks is None or not cfg.async_models:
        return None
    return AsyncInferenceAddons(
        f"{target.name}-async",
        AsyncInferenceAddonsArgs(
            registry=target.registry,
            region=eks.region,
            secrets_role_arn=eks.role(ROLE_EXTERNAL_SECRETS),
            namespaces=tuple(m.tenant for m in cfg.async_models),
        ),
        opts=pulumi.ResourceOptions(provider=target.provider),
    )


def _workers(
    target: ClusterTarget,
    spec: ServingSpec,
    served: ModelServing,
    addons: AsyncInferenceAddons | None,
    namespace: pulumi.Resource,
) -> None:
    """A model's async workers, once its serving objects (identity, store) and the add-ons exist."""
    if spec.model.async_workers is None or addons is None or target.eks is None:
        return
    AsyncWorkers(
        f"{target.name}-async-{spec.model.name}",
        AsyncWorkersArgs(
            spec=spec,
            queue_host=target.eks.field("job_queue_endpoint"),
            queue_secret_arn=target.eks.field("job_queue_secret_arn"),
            callback_secret_arn=target.eks.field("job_callback_secret_arn"),
            secrets_wait_for=(namespace, *addons.ready),
            waits_for=(served, *addons.ready),
        ),
        opts=pulumi.ResourceOptions(provider=target.provider),
    )


def _serving(
    cfg: StackConfig,
    target: ClusterTarget,
    mesh: Mesh,
    tenants: dict[str, Tenancy],
    addons: AsyncInferenceAddons | None,
    features: Features | None = None,
) -> dict[str, ModelServing]:
    on_cluster = pulumi.ResourceOptions(provider=target.provider)
    store = None if cfg.onprem is None else cfg.onprem.store
    served_models: dict[str, ModelServing] = {}
    for model in cfg.models:
        spec = ServingSpec(
            model=model,
            image=pulumi.Output.from_input(target.registry).apply(cfg.image.serving_image),  # type: ignore[arg-type]
            # The model sync runs the AWS CLI (S3 sync, then `sha256sum -c`): the pinned upstream image,
            # mirrored into the cluster's registry like every third-party image.
            sync_image=pulumi.Output.from_input(target.registry).apply(  # type: ignore[arg-type]
                load_lock().image("aws-cli").ref
            ),
            region=target.eks.region if target.eks else "",
            service_account=model.name,
            gateway=mesh.gateway_ref,
            api_host=cfg.gateway.api_host,
            store_endpoint=store.endpoint if store else None,
            store_credentials_secret=store.credentials_secret if store else None,
            callback_hosts=cfg.job_queue.callback_hosts if cfg.job_queue else (),
            features=cfg.features is not None and cfg.features.of(model.name) is not None,
        )
        served = ModelServing(
            f"{target.name}-model-{model.name}",
            ModelServingArgs(
                spec=spec,
                jwt_issuer=cfg.gateway.jwt_issuer,
                bucket=target.eks.field("model_bucket") if target.eks else (store.bucket if store else ""),
                job_bucket=target.eks.field("job_bucket") if target.eks else "",
                role_arn=target.eks.role(model_role(model.name)) if target.eks else None,
                waits_for=(
                    mesh,
                    tenants[model.tenant].namespace_resource,
                    *([features.config_maps[model.tenant]] if spec.features and features else []),
                ),
            ),
            opts=on_cluster,
        )
        _workers(target, spec, served, addons, tenants[model.tenant].namespace_resource)
        served_models[model.name] = served
    return served_models


def _rollout_controllers(
    cfg: StackConfig, target: ClusterTarget, served: dict[str, ModelServing], monitoring: Monitoring
) -> None:
    """A controller per model with a rollout block, in every cluster: each region's VirtualService and
    Prometheus are its own, so each region's rollout is judged on its own traffic."""
    for model in cfg.models:
        if model.rollout is None:
            continue
        RolloutController(
            f"{target.name}-rollout-{model.name}",
            RolloutControllerArgs(
                model=model,
                image=pulumi.Output.from_input(target.registry).apply(cfg.image.retrain_image),
                storage_class=cfg.onprem.storage_class if cfg.onprem else STORAGE_CLASS,
                waits_for=(served[model.name], monitoring),
            ),
            opts=pulumi.ResourceOptions(provider=target.provider),
        )


def _features(cfg: StackConfig, target: ClusterTarget, tenants: dict[str, Tenancy]) -> Features | None:
    """The feature store's ConfigMaps and the materialization CronJob, in every EKS cluster of a stack with a
    features block: each region's online store is its own, so each region materializes its own tables."""
    config, eks = cfg.features, target.eks
    if config is None or eks is None:
        return None
    readers = {m.tenant for m in cfg.models if config.of(m.name) is not None}
    return Features(
        f"{target.name}-features",
        FeaturesArgs(
            stack=cfg.stack,
            project=config.project,
            region=eks.region,
            bucket=eks.field("model_bucket"),
            namespaces=tuple(sorted(readers | {config.tenant})),
            job_namespace=config.tenant,
            schedule=config.schedule,
            image=pulumi.Output.from_input(target.registry).apply(cfg.image.retrain_image),
            role_arn=eks.role(ROLE_FEATURES),
            waits_for=tuple(t.namespace_resource for t in tenants.values()),
        ),
        opts=pulumi.ResourceOptions(provider=target.provider),
    )


def deploy_cluster(
    cfg: StackConfig,
    target: ClusterTarget,
    primary: bool = True,
    model_buckets: tuple[pulumi.Input[str], ...] = (),
) -> None:
    """Everything one cluster runs, on that cluster's own Kubernetes provider; the primary cluster (the
    stack's first region, or the one on-premises cluster) also runs the retrain receiver, which publishes
    to `model_buckets` (default: the cluster's own)."""
    on_cluster = pulumi.ResourceOptions(provider=target.provider)
    lb = _aws_addons(target, on_cluster)
    CertManager(
        f"{target.name}-cert-manager",
        CertManagerArgs(
            registry=target.registry,
            api_host=cfg.gateway.api_host,
            gateway_credential_name=cfg.gateway.tls_credential_name,
        ),
        opts=on_cluster,
    )
    _autoscaling(target, on_cluster)
    observability = _observability(cfg, target, on_cluster)
    mesh = _mesh(cfg, target, observability, lb)
    monitoring = _monitoring(cfg, target, on_cluster, retrains=primary)
    if primary:
        _retrain(cfg, target, monitoring, model_buckets or (model_bucket(cfg, target),))
    # The API server's own refusal of unsafe pods in the tenants' namespaces, in place before them.
    admission = WorkloadAdmission(
        f"{target.name}-admission", WorkloadAdmissionArgs(registry=target.registry), opts=on_cluster
    )
    tenants = {
        t.name: Tenancy(
            f"{target.name}-tenant-{t.name}",
            TenancyArgs(tenant=t, group_prefix=IDENTITY_GROUP_PREFIX, waits_for=admission.ready),
            opts=on_cluster,
        )
        for t in cfg.tenants
    }
    features = _features(cfg, target, tenants)
    served = _serving(cfg, target, mesh, tenants, _async_addons(cfg, target), features)
    _rollout_controllers(cfg, target, served, monitoring)


def _autoscaling(target: ClusterTarget, opts: pulumi.ResourceOptions) -> Autoscaling:
    """Pods scale everywhere; nodes only on EKS, where the cluster autoscaler resizes infra's node group
    with infra's role. No AWS autoscaler can add nodes to an on-premises cluster."""
    eks = target.eks
    return Autoscaling(
        f"{target.name}-autoscaling",
        AutoscalingArgs(
            registry=target.registry,
            cluster_autoscaler=None
            if eks is None
            else ClusterAutoscalerSettings(
                cluster_name=eks.field("cluster_name"),
                region=eks.region,
                role_arn=eks.role(ROLE_CLUSTER_AUTOSCALER),
            ),
        ),
        opts=opts,
    )


def _mesh(
    cfg: StackConfig, target: ClusterTarget, observability: Observability, lb: list[pulumi.Resource]
) -> Mesh:
    """The mesh and its gateway. The health checks arrive under every region's own name (an on-premises
    stack has no regions: under the API host); an on-premises stack's object store is a further host
    outside the cluster that pods may reach. On EKS it waits for the load balancer controller that binds
    its gateway."""
    regions, eks = tuple(r.region for r in cfg.regions), target.eks
    return Mesh(
        f"{target.name}-mesh",
        MeshArgs(
            gateway=cfg.gateway,
            registry=target.registry,
            models=cfg.models,
            region=eks.region if eks else None,
            health_hosts=tuple(f"{r}.{cfg.gateway.api_host}" for r in regions) or (cfg.gateway.api_host,),
            dynamodb=cfg.features is not None,
            egress_hosts=(_host(cfg.onprem.store.endpoint),) if cfg.onprem else (),
            istiod_values=mesh_tracing_values(observability.collector_service),
        ),
        opts=pulumi.ResourceOptions(provider=target.provider, depends_on=lb),
    )


def _host(url: str) -> str:
    return url.removeprefix("https://").split("/", 1)[0].split(":", 1)[0]


def main(unrecorded_digests_allowed: bool = False) -> None:
    """Build the platform layer of the selected stack. `unrecorded_digests_allowed` only for a cluster that
    pulls no image (`servectl deploy --no-nodes`): anywhere else a placeholder digest fails at pull time."""
    cfg = load_config()
    if cfg.profile == "smb":
        # No cluster to deploy into: the smb profile is SageMaker endpoints and an API, all in infra.
        raise pulumi.RunError(
            f"stack {cfg.stack} is an smb stack: it has no platform layer (no cluster); deploy its infra "
            f"layer only (`pulumi up -s {cfg.stack}` at the repository root), see docs/smb.md"
        )
    lock = load_lock()
    if not pulumi.runtime.is_dry_run() and lock.unrecorded() and not unrecorded_digests_allowed:
        # A placeholder digest would deploy and then fail to pull; refuse up front and say what to run.
        raise pulumi.RunError(
            f"artifacts.lock.json: {', '.join(lock.unrecorded()[:5])}...: digests not recorded yet; "
            f"run `servectl mirror --stack {cfg.stack} --record` first"
        )
    targets = cluster_targets(cfg)
    buckets = tuple(model_bucket(cfg, target) for target in targets)
    for index, target in enumerate(targets):
        deploy_cluster(cfg, target, primary=index == 0, model_buckets=buckets)
    pulumi.export("clusters", [t.name for t in targets])
    pulumi.export("api_host", cfg.gateway.api_host)


if __name__ == "__main__":
    main()
