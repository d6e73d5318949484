"""Tenancy: a namespace per tenant with quota, limits, default-deny networking and group-bound roles."""

from dataclasses import dataclass

import pulumi

from stacks.components import kube
from stacks.manifests import tenancy
from stacks.settings import TenantConfig


@dataclass(frozen=True, kw_only=True)
class TenancyArgs:
    """Inputs of `Tenancy`."""

    tenant: TenantConfig
    """The tenant."""
    group_prefix: str
    """Prefix the cluster puts before identity-provider group names."""
    waits_for: tuple[pulumi.Resource, ...] = ()
    """What must exist before the namespace: the cluster's admission bindings, so that every pod in it is
    judged."""


class Tenancy(pulumi.ComponentResource):
    """One tenant's namespace and everything that fences it."""

    namespace: str
    namespace_resource: pulumi.Resource

    def __init__(self, name: str, args: TenancyArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("model-serving:tenancy:Tenancy", name, None, opts)
        tenant = args.tenant
        namespace = kube.create(
            f"{name}-ns",
            tenancy.namespace(tenant),
            pulumi.ResourceOptions(parent=self, depends_on=list(args.waits_for)),
        )
        inside = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
        kube.create(f"{name}-quota", tenancy.resource_quota(tenant), inside)
        kube.create(f"{name}-limits", tenancy.limit_range(tenant), inside)
        kube.create(f"{name}-default-deny", tenancy.default_deny(tenant), inside)
        for role in tenancy.roles(tenant):
            kube.create(f"{name}-role-{role['metadata']['name']}", role, inside)
        for binding in tenancy.role_bindings(tenant, args.group_prefix):
            kube.create(f"{name}-binding-{binding['metadata']['name']}", binding, inside)
        self.namespace = tenant.name
        self.namespace_resource = namespace
        self.register_outputs({"namespace": self.namespace})
