"""RetrainReceiver: the Alertmanager webhook that runs `servectl retrain` in its pod (issue 15 point 4)."""

from dataclasses import dataclass

import pulumi

from stacks.components import kube
from stacks.manifests import retrain as rt


@dataclass(frozen=True, kw_only=True)
class RetrainReceiverArgs:
    """Inputs of `RetrainReceiver`."""

    image: pulumi.Input[str]
    """The retrain image (servectl with the training extras), by digest."""
    bucket: pulumi.Input[str]
    """The model bucket; each model's labelled dataset is `rt.dataset_uri(bucket, model)`."""
    model_buckets: tuple[pulumi.Input[str], ...] = ()
    """Every region's model bucket, `bucket`'s region first: the serving version is read from the first and
    each new version published to all. Empty: `bucket` alone."""
    models: tuple[str, ...]
    """The models it retrains."""
    storage_class: str
    """StorageClass of its state volume."""
    role_arn: pulumi.Input[str] | None = None
    """IRSA role to read the datasets and publish new versions; None where there is no IRSA."""
    store_endpoint: str | None = None
    """On premises: the S3-compatible store's URL."""
    store_credentials_secret: str | None = None
    """On premises: the Secret with the store's keys, in the monitoring namespace."""
    waits_for: tuple[pulumi.Resource, ...] = ()
    """What must exist first: the monitoring namespace."""


class RetrainReceiver(pulumi.ComponentResource):
    """ServiceAccount (no Kubernetes permissions), ConfigMap, state volume, Deployment, Service and
    NetworkPolicy in the monitoring namespace."""

    webhook_url: str

    def __init__(
        self, name: str, args: RetrainReceiverArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("model-serving:monitoring:RetrainReceiver", name, None, opts)
        first = pulumi.ResourceOptions(parent=self, depends_on=list(args.waits_for))
        spec = pulumi.Output.all(
            image=args.image,
            bucket=args.bucket,
            role=args.role_arn,
            buckets=pulumi.Output.all(*(args.model_buckets or (args.bucket,))),
        ).apply(
            lambda v: rt.RetrainSpec(
                image=v["image"],
                datasets={m: rt.dataset_uri(v["bucket"], m) for m in args.models},
                storage_class=args.storage_class,
                role_arn=v["role"],
                model_buckets=tuple(v["buckets"]),
                store_endpoint=args.store_endpoint,
                store_credentials_secret=args.store_credentials_secret,
            )
        )
        # The claim and the Service need no Output; the rest are built once the image and bucket are known.
        static = rt.RetrainSpec(image="", datasets={}, storage_class=args.storage_class)
        account = kube.create(
            f"{name}-sa",
            rt.service_account(static)
            | {"metadata": spec.apply(lambda s: rt.service_account(s)["metadata"])},
            first,
        )
        config = kube.create(
            f"{name}-config",
            rt.config_map(static) | {"data": spec.apply(lambda s: rt.config_map(s)["data"])},
            first,
        )
        state = kube.create(f"{name}-state", rt.state_volume(static), first)
        after = pulumi.ResourceOptions(parent=self, depends_on=[account, config, state, *args.waits_for])
        kube.create(
            f"{name}-deployment",
            rt.deployment(static) | {"spec": spec.apply(lambda s: rt.deployment(s)["spec"])},
            after,
        )
        kube.create(f"{name}-svc", rt.service(), after)
        kube.create(f"{name}-netpol", rt.network_policy(), after)
        self.webhook_url = rt.webhook_url()
        self.register_outputs({"webhook_url": self.webhook_url})
