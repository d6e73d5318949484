import pytest

from stacks.components.tenancy import Tenancy, TenancyArgs
from stacks.settings import StackConfig
from tests.stacks.conftest import Built, build_component


@pytest.fixture(scope="module")
def tenancy(eu_config: StackConfig) -> Built:
    tenant = eu_config.tenants[0]
    return build_component(lambda opts: Tenancy("t", TenancyArgs(tenant=tenant, group_prefix="idp:"), opts))


def test_quota_and_limits(tenancy: Built) -> None:
    (quota,) = tenancy.kinds("ResourceQuota")
    assert quota["spec"]["hard"]["requests.cpu"] == "112", f"quota: {quota['spec']}"
    assert len(tenancy.kinds("LimitRange")) == 1, "no LimitRange"


def test_default_deny_network_policy(tenancy: Built) -> None:
    (deny,) = tenancy.kinds("NetworkPolicy")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, deny["spec"]


def test_roles_bound_to_idp_groups(tenancy: Built) -> None:
    bindings = {
        b["roleRef"]["name"]: [s["name"] for s in b["subjects"]] for b in tenancy.kinds("RoleBinding")
    }
    assert bindings == {
        "model-deployer": ["idp:serving-payments-deployers"],
        "viewer": ["idp:serving-payments-viewers", "idp:sre"],
    }, bindings


def test_deployer_cannot_touch_secrets_or_rbac(tenancy: Built) -> None:
    resources = {r for role in tenancy.kinds("Role") for rule in role["rules"] for r in rule["resources"]}
    assert not {"secrets", "roles", "rolebindings"} & resources, f"resources: {resources}"
