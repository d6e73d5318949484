"""Fixtures for the stack tests: components built alone under recording mocks, and the four stacks' plans."""

from collections.abc import Callable
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pytest
import yaml

from stacks.config import parse_config
from stacks.preview.monitor import Registration
from stacks.preview.run import ROOT, Plan, layers_of, plan_stack, run_under_mocks, stack_names
from stacks.settings import StackConfig

Build = Callable[..., list[Registration]]


class Built:
    """What a component registered, with lookups by type and name."""

    def __init__(self, registrations: list[Registration], regions: dict[str, str]) -> None:
        self.registrations = registrations
        self.regions = regions

    def of_type(self, typ: str) -> list[Registration]:
        """Every registration of a type."""
        return [r for r in self.registrations if r.type == typ]

    def one(self, typ: str, name_suffix: str = "") -> Registration:
        """The single registration of a type whose name ends with `name_suffix`."""
        found = [r for r in self.of_type(typ) if r.name.endswith(name_suffix)]
        assert len(found) == 1, f"expected one {typ} named *{name_suffix}, found {[r.name for r in found]}"
        return found[0]

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        """Inputs of every Kubernetes object of a kind."""
        return [
            r.inputs
            for r in self.registrations
            if r.type.startswith("kubernetes:") and r.type.endswith(f":{kind}")
        ]


DEFAULT_PROVIDER_REGION = "sa-east-1"
"""`aws:region` of the component tests' stack: a region no component is built in, so a resource that lost its
explicit provider (and would fall back to the default one) cannot pass for a regional resource."""


def build_component(
    factory: Callable[[pulumi.ResourceOptions], object], region: str = "eu-central-1"
) -> Built:
    """Build one component directly (not through `__main__`) on a regional AWS and a Kubernetes provider.

    Fails when any AWS or Kubernetes resource was registered without an explicit provider: a stack's
    default AWS provider is the deployer's ambient region, a default Kubernetes provider the ambient
    kubeconfig."""

    def program() -> None:
        provider = aws.Provider("test-aws", region=region)
        cluster = k8s.Provider(
            "test-k8s", kubeconfig="{}", opts=pulumi.ResourceOptions(depends_on=[provider])
        )
        factory(pulumi.ResourceOptions(providers={"aws": provider, "kubernetes": cluster}))

    monitor, _ = run_under_mocks(
        program, stack="test", project="model-serving", config={"aws:region": DEFAULT_PROVIDER_REGION}
    )
    unprovided = unprovided_resources(monitor.registrations, monitor.regions)
    assert not unprovided, f"registered on the default provider, not the component's: {unprovided}"
    return Built(monitor.registrations, monitor.regions)


def unprovided_resources(registrations: list[Registration], regions: dict[str, str]) -> list[str]:
    """URNs of the AWS and Kubernetes resources that no explicit (located) provider manages."""
    return [
        r.urn
        for r in registrations
        if r.custom
        and r.type.split(":", 1)[0] in ("aws", "kubernetes")
        and not r.type.startswith("pulumi:providers:")
        and r.urn not in regions
    ]


@pytest.fixture(scope="session")
def plans() -> dict[str, Plan]:
    """Every layer of every shipped stack, planned once per session, keyed `<stack>.<layer>`."""
    return {
        f"{name}.{layer}": plan_stack(name, layer=layer)
        for name in stack_names()
        for layer in layers_of(name)
    }


TAGS = {
    "owner": "t",
    "data-classification": "internal",
    "jurisdiction": "EU",
    "stack": "test",
    "managed-by": "pulumi",
}


@pytest.fixture(scope="session")
def eu_config() -> StackConfig:
    """The eu-prod stack file, parsed."""
    config = yaml.safe_load((ROOT / "Pulumi.eu-prod.yaml").read_text())["config"]
    values = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("model-serving:")}
    return parse_config(
        values, stack="eu-prod", source="Pulumi.eu-prod.yaml", aws_region=config["aws:region"]
    )
