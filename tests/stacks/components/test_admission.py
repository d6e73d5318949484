"""WorkloadAdmission built alone under mocks: a policy and a binding per shape, the registry (an output on
EKS) inside every policy, each binding after its policy, and a bad registry refused at plan time."""

import json

import pulumi
import pytest

from stacks.components.admission import WorkloadAdmission, WorkloadAdmissionArgs
from stacks.components.tenancy import Tenancy, TenancyArgs
from stacks.manifests import admission
from stacks.settings import StackConfig
from tests.stacks.conftest import Built, build_component

REGISTRY = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/eu-prod"
POLICY = "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicy"
BINDING = "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicyBinding"
NAMESPACE = "kubernetes:core/v1:Namespace"


@pytest.fixture(scope="module")
def built(eu_config: StackConfig) -> Built:
    """The component with its registry as an output (as on EKS), and a tenant waiting for it."""

    def program(opts: pulumi.ResourceOptions) -> None:
        gate = WorkloadAdmission(
            "adm", WorkloadAdmissionArgs(registry=pulumi.Output.from_input(REGISTRY)), opts
        )
        tenant = TenancyArgs(tenant=eu_config.tenants[0], group_prefix="idp:", waits_for=gate.ready)
        Tenancy("t", tenant, opts)

    return build_component(program)


def test_a_policy_and_a_binding_per_shape(built: Built) -> None:
    names = {r.inputs["metadata"]["name"] for r in built.of_type(POLICY)}
    assert names == {f"{admission.NAME}-{s.name}" for s in admission.SHAPES}, names
    bound = {r.inputs["spec"]["policyName"] for r in built.of_type(BINDING)}
    assert bound == names, f"every policy is bound, and only those: {bound}"


def test_every_policy_carries_the_registry_it_was_given(built: Built) -> None:
    policies = built.of_type(POLICY)
    assert len(policies) == len(admission.SHAPES), policies
    for policy in policies:
        variables = {v["name"]: v["expression"] for v in policy.inputs["spec"]["variables"]}
        assert variables["registry"] == json.dumps(REGISTRY), (policy.name, variables["registry"])


def test_each_binding_waits_for_its_policy(built: Built) -> None:
    bindings = built.of_type(BINDING)
    assert len(bindings) == len(admission.SHAPES), bindings
    for binding in bindings:
        policy = built.one(POLICY, binding.name.removesuffix("-binding"))
        assert policy.urn in binding.dependencies, (binding.name, binding.dependencies)


def test_the_tenant_namespace_waits_for_every_binding(built: Built) -> None:
    namespace = built.one(NAMESPACE, "t-ns")
    missing = {b.urn for b in built.of_type(BINDING)} - set(namespace.dependencies)
    assert not missing, f"the namespace may exist before these bindings: {missing}"


def test_a_bad_registry_fails_the_plan_with_its_value() -> None:
    with pytest.raises(
        ValueError, match=r"admission: registry 'Registry\.example/' is not a registry location"
    ):
        WorkloadAdmission("bad", WorkloadAdmissionArgs(registry="Registry.example/"))
