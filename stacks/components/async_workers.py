"""AsyncWorkers: one model's asynchronous inference workers, scaled on their Redis stream's backlog."""

from collections.abc import Callable
from dataclasses import dataclass

import pulumi

from stacks.components import kube
from stacks.manifests import Manifest, async_inference, serving


@dataclass(frozen=True, kw_only=True)
class AsyncWorkersArgs:
    """Inputs of `AsyncWorkers`."""

    spec: serving.ServingSpec
    """The model's serving spec: its workers run the same image, identity and model store."""
    queue_host: pulumi.Input[str]
    """The job queue's primary endpoint (an infra-layer output)."""
    queue_secret_arn: pulumi.Input[str]
    """The Secrets Manager secret of the queue's AUTH token (an infra-layer output)."""
    callback_secret_arn: pulumi.Input[str] = ""
    """The secret of the callbacks' HMAC key (an infra-layer output); "" with callbacks off."""
    secrets_wait_for: tuple[pulumi.Resource, ...] = ()
    """What the synced Secrets need first: the tenant's namespace and the secret store. Not the serving
    objects: the serving pods read these Secrets, so Pulumi's wait for their Deployments would never end if
    the Secrets came after them."""
    waits_for: tuple[pulumi.Resource, ...] = ()
    """What must exist first: the model's serving objects (its service account and store ConfigMap), KEDA and
    the secret store."""


def _deferred(
    build: Callable[[str, str], Manifest], host: pulumi.Input[str], arn: pulumi.Input[str]
) -> Manifest:
    """A manifest whose spec names the queue (outputs at deploy time); its kind and metadata do not."""
    static = build("queue.invalid", "arn:aws:secretsmanager:invalid")
    spec = pulumi.Output.all(host=host, arn=arn).apply(lambda v: build(v["host"], v["arn"])["spec"])
    return {key: value for key, value in static.items() if key != "spec"} | {"spec": spec}


class AsyncWorkers(pulumi.ComponentResource):
    """The queue Secret (synced from Secrets Manager), the workers' Deployment with the model's variants,
    their ScaledObject and PDB, and the network and mesh rules that let them, and the model's serving pods,
    reach the queue and nothing else new."""

    deployment_name: str

    def __init__(self, name: str, args: AsyncWorkersArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("model-serving:serving:AsyncWorkers", name, None, opts)
        model = args.spec.model
        host, arn = args.queue_host, args.queue_secret_arn
        first = pulumi.ResourceOptions(parent=self, depends_on=list(args.waits_for))
        early = pulumi.ResourceOptions(parent=self, depends_on=list(args.secrets_wait_for))
        secret = kube.create(
            f"{name}-queue-secret",
            _deferred(lambda h, a: async_inference.external_secret(model, h, a), host, arn),
            early,
        )
        kube.create(
            f"{name}-job-queue",
            _deferred(lambda h, _: async_inference.queue_service_entry(model, h), host, arn),
            first,
        )
        kube.create(f"{name}-netpol", async_inference.network_policy(model, args.spec.callback_hosts), first)
        variants = kube.create(f"{name}-variants", async_inference.variants_config(model), first)
        synced = [secret, variants, *self._callbacks(name, args, first, early)]
        after = pulumi.ResourceOptions(parent=self, depends_on=[*synced, *args.waits_for])
        workers = kube.create(f"{name}-deployment", async_inference.worker_deployment(args.spec), after)
        kube.create(f"{name}-pdb", async_inference.disruption_budget(model), after)
        auth = kube.create(f"{name}-trigger-auth", async_inference.trigger_authentication(model), after)
        kube.create(
            f"{name}-scaler",
            _deferred(lambda h, _: async_inference.scaled_object(model, h), host, arn),
            pulumi.ResourceOptions(parent=self, depends_on=[workers, auth]),
        )
        self.deployment_name = async_inference.worker_name(model)
        self.register_outputs({"deployment_name": self.deployment_name})

    @staticmethod
    def _callbacks(
        name: str, args: AsyncWorkersArgs, first: pulumi.ResourceOptions, early: pulumi.ResourceOptions
    ) -> list[pulumi.Resource]:
        """With callbacks on: the HMAC key's Secret (the pods mount it), a ServiceEntry per allowed host."""
        if not serving.callbacks_on(args.spec):
            return []
        model = args.spec.model
        for entry in async_inference.callback_service_entries(model, args.spec.callback_hosts):
            kube.create(f"{name}-{entry['metadata']['name']}", entry, first)
        key = _deferred(
            lambda _, a: async_inference.callback_external_secret(model, a), "", args.callback_secret_arn
        )
        return [kube.create(f"{name}-callback-secret", key, early)]
