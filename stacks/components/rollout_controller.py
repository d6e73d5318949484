"""RolloutController: one model's `servectl experiment controller` in its namespace (issue 14 point 8)."""

from dataclasses import dataclass

import pulumi

from stacks.components import kube
from stacks.manifests import rollout_controller as rc
from stacks.settings import ModelConfig


@dataclass(frozen=True, kw_only=True)
class RolloutControllerArgs:
    """Inputs of `RolloutController`."""

    model: ModelConfig
    """The model; it must have a rollout block (its steps, samples, checks and interval)."""
    image: pulumi.Input[str]
    """The retrain image (it has servectl with the experiments' dependencies), by digest."""
    storage_class: str
    """StorageClass of the experiment log's volume."""
    waits_for: tuple[pulumi.Resource, ...] = ()
    """What must exist first: the model's serving objects (its VirtualService) and the monitoring stack
    (the PodMonitor's CRD)."""


class RolloutController(pulumi.ComponentResource):
    """ServiceAccount, Role and RoleBinding (its one VirtualService, Events), log volume, Deployment,
    PodMonitor and NetworkPolicy in the model's namespace."""

    def __init__(
        self, name: str, args: RolloutControllerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("model-serving:experiments:RolloutController", name, None, opts)
        model = args.model
        rc.command(model)  # refuses, at plan time, a model without a rollout block
        first = pulumi.ResourceOptions(parent=self, depends_on=list(args.waits_for))
        static = rc.ControllerSpec(model=model, image="", storage_class=args.storage_class)
        account = kube.create(f"{name}-sa", rc.service_account(model), first)
        role = kube.create(f"{name}-role", rc.role(model), first)
        binding = kube.create(
            f"{name}-binding",
            rc.role_binding(model),
            pulumi.ResourceOptions(parent=self, depends_on=[account, role]),
        )
        volume = kube.create(f"{name}-log", rc.log_volume(static), first)
        after = pulumi.ResourceOptions(parent=self, depends_on=[binding, volume, *args.waits_for])
        built = pulumi.Output.from_input(args.image).apply(
            lambda image: rc.deployment(
                rc.ControllerSpec(model=model, image=image, storage_class=args.storage_class)
            )
        )
        kube.create(
            f"{name}-deployment", rc.deployment(static) | {"spec": built.apply(lambda d: d["spec"])}, after
        )
        kube.create(f"{name}-podmonitor", rc.pod_monitor(model), after)
        kube.create(f"{name}-netpol", rc.network_policy(model), first)
        self.register_outputs({})
