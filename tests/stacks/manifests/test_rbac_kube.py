"""RBAC on a real kube-apiserver (tests/kube_api.py): the tenancy Roles and RoleBindings exactly as the
onprem-ae platform plan builds them, a second tenant built by the same functions, and the platform deployer's
ClusterRole (stacks/manifests/deployer_rbac.py); then SubjectAccessReviews (made with the admin token) and
real requests with the users' own tokens.

What this proves that the offline tests cannot: the API server's own authorizer decides (group subjects, the
`idp:` prefix, resourceNames on named and nameless requests), the resource names we grant are the ones the
server serves, and its escalation check refuses a Role granting more than its creator holds.
"""

from collections.abc import Iterator
from typing import Any

import pytest

from servectl.experiments.kube import ApiServer, KubeError
from stacks.components.cluster import IDENTITY_GROUP_PREFIX
from stacks.manifests import deployer_rbac, tenancy
from stacks.preview.run import plan_stack
from stacks.settings import TenantConfig
from tests.kube_api import KubeApi, User, kube_api

pytestmark = pytest.mark.slow

OTHER = TenantConfig(
    name="retail",
    deployer_groups=("serving-retail-deployers",),
    viewer_groups=("serving-retail-viewers",),
    cpu="4",
    memory="8Gi",
    pods=10,
)
DEPLOYER = User("deployer-token", "platform-deployer", (deployer_rbac.GROUP,))
ALICE = User("alice-token", "alice", (f"{IDENTITY_GROUP_PREFIX}serving-banking-deployers",))
VICTOR = User("victor-token", "victor", (f"{IDENTITY_GROUP_PREFIX}serving-banking-viewers",))
BOB = User("bob-token", "bob", (f"{IDENTITY_GROUP_PREFIX}serving-retail-deployers",))
SAR = "apis/authorization.k8s.io/v1/subjectaccessreviews"
RBAC_API = "apis/rbac.authorization.k8s.io/v1"


def _path(manifest: dict[str, Any]) -> str:
    """The collection a manifest is created in."""
    group_version, namespace = manifest["apiVersion"], manifest["metadata"].get("namespace")
    resource = deployer_rbac.resource_of(f"kubernetes:{group_version}:{manifest['kind']}")[1]
    base = "api/v1" if group_version == "v1" else f"apis/{group_version}"
    return f"{base}/namespaces/{namespace}/{resource}" if namespace else f"{base}/{resource}"


@pytest.fixture(scope="module")
def onprem() -> dict[str, Any]:
    """The onprem-ae platform layer's offline plan."""
    return plan_stack("onprem-ae", layer="platform").document


def _rbac_objects(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan's namespaces, Roles and RoleBindings, as the stack builds them (the plan's inputs)."""
    kinds = (
        "core/v1:Namespace",
        "rbac.authorization.k8s.io/v1:Role",
        "rbac.authorization.k8s.io/v1:RoleBinding",
    )
    return [
        step["newState"]["inputs"]
        for step in document["steps"]
        if step["newState"]["type"].removeprefix("kubernetes:") in kinds
    ]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, onprem: dict[str, Any]) -> Iterator[KubeApi]:
    """The API server with the deployer's role applied by the admin, onprem-ae's namespaces and RBAC applied
    by the deployer itself, the second tenant's by the admin, and a Secret in each tenant namespace."""
    with kube_api(tmp_path_factory.mktemp("rbac"), [DEPLOYER, ALICE, VICTOR, BOB]) as api:
        admin = api.admin
        for manifest in (deployer_rbac.cluster_role(onprem), deployer_rbac.cluster_role_binding()):
            admin.request("POST", _path(manifest), manifest)
        deployer = api.client(DEPLOYER.name)
        for manifest in _rbac_objects(onprem):
            deployer.request("POST", _path(manifest), manifest)
        for manifest in [
            tenancy.namespace(OTHER),
            *tenancy.roles(OTHER),
            *tenancy.role_bindings(OTHER, IDENTITY_GROUP_PREFIX),
        ]:
            admin.request("POST", _path(manifest), manifest)
        for namespace in ("banking", "retail", "kube-system"):
            meta = {"name": "db-password", "namespace": namespace}
            secret = {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "stringData": {"password": "x"}}
            admin.request("POST", _path(secret), secret)
        yield api


def allowed(
    admin: ApiServer, user: User, verb: str, resource: str, namespace: str = "", name: str = ""
) -> bool:
    """The API server's verdict on `user` (with its groups, as its token authenticates) doing `verb` on
    `resource` (`group/resource`, or `resource` in the core group; `resource:subresource`)."""
    group, _, plural = resource.rpartition("/")
    plural, _, subresource = plural.partition(":")
    attributes = {"verb": verb, "group": group, "resource": plural, "subresource": subresource,
                  "namespace": namespace, "name": name}  # fmt: skip
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user.name,
            "groups": [*user.groups, "system:authenticated"],
            "resourceAttributes": attributes,
        },
    }
    return bool(admin.request("POST", SAR, review)["status"].get("allowed", False))


TENANT_CASES = [
    (ALICE, "create", "apps/deployments", "banking", "", True),
    (ALICE, "patch", "apps/deployments", "banking", "tabular-classifier-v1", True),
    (ALICE, "patch", "networking.istio.io/virtualservices", "banking", "tabular-classifier", True),
    (ALICE, "create", "apps/deployments", "retail", "", False),
    (ALICE, "get", "secrets", "retail", "db-password", False),
    (ALICE, "list", "secrets", "retail", "", False),
    (ALICE, "get", "secrets", "banking", "db-password", False),
    (ALICE, "create", "rbac.authorization.k8s.io/clusterroles", "", "", False),
    (ALICE, "patch", "rbac.authorization.k8s.io/clusterroles", "", "cluster-admin", False),
    (ALICE, "create", "rbac.authorization.k8s.io/clusterrolebindings", "", "", False),
    (ALICE, "patch", "rbac.authorization.k8s.io/clusterrolebindings", "", "cluster-admin", False),
    (ALICE, "create", "rbac.authorization.k8s.io/rolebindings", "banking", "", False),
    (BOB, "create", "apps/deployments", "retail", "", True),
    (BOB, "get", "secrets", "banking", "db-password", False),
    (BOB, "patch", "apps/deployments", "banking", "tabular-classifier-v1", False),
    (VICTOR, "get", "apps/deployments", "banking", "tabular-classifier-v1", True),
    (VICTOR, "get", "pods:log", "banking", "tabular-classifier-v1-abc", True),
    (VICTOR, "create", "apps/deployments", "banking", "", False),
    (VICTOR, "patch", "networking.istio.io/virtualservices", "banking", "tabular-classifier", False),
    (VICTOR, "get", "apps/deployments", "retail", "x", False),
]


@pytest.mark.parametrize(("user", "verb", "resource", "namespace", "name", "expected"), TENANT_CASES)
def test_tenant_groups_as_the_server_decides(
    cluster: KubeApi, user: User, verb: str, resource: str, namespace: str, name: str, expected: bool
) -> None:
    verdict = allowed(cluster.admin, user, verb, resource, namespace, name)
    assert verdict is expected, f"{user.name} {verb} {resource} in {namespace or 'the cluster'} {name}"


DEPLOYER_CASES = [
    ("get", "secrets", "monitoring", "alertmanager-config", True),
    ("create", "secrets", "monitoring", "", True),
    ("list", "secrets", "", "", False),
    ("list", "secrets", "banking", "", False),
    ("get", "secrets", "retail", "db-password", False),
    ("get", "secrets", "kube-system", "db-password", False),
    ("watch", "secrets", "kube-system", "", False),
    ("delete", "namespaces", "", "banking", True),
    ("delete", "namespaces", "", "kube-system", False),
    ("patch", "namespaces", "", "default", False),
    ("impersonate", "users", "", "admin", False),
    ("impersonate", "groups", "", "system:masters", False),
    ("impersonate", "serviceaccounts", "kube-system", "default", False),
    ("create", "rbac.authorization.k8s.io/clusterroles", "", "", False),
    ("create", "rbac.authorization.k8s.io/clusterrolebindings", "", "", False),
    ("escalate", "rbac.authorization.k8s.io/roles", "banking", "", False),
    ("bind", "rbac.authorization.k8s.io/clusterroles", "", "cluster-admin", False),
    ("create", "pods", "banking", "", False),
    ("create", "pods:exec", "banking", "x", False),
    # Known and documented (docs/deploy.md): namespaced kinds are granted in every namespace.
    ("create", "apps/deployments", "kube-system", "", True),
]


@pytest.mark.parametrize(("verb", "resource", "namespace", "name", "expected"), DEPLOYER_CASES)
def test_the_platform_deployer_as_the_server_decides(
    cluster: KubeApi, verb: str, resource: str, namespace: str, name: str, expected: bool
) -> None:
    verdict = allowed(cluster.admin, DEPLOYER, verb, resource, namespace, name)
    assert verdict is expected, f"deployer {verb} {resource} in {namespace or 'the cluster'} {name}"


def test_the_deployer_may_create_and_change_every_object_of_the_plan(
    cluster: KubeApi, onprem: dict[str, Any]
) -> None:
    objects = deployer_rbac.planned(onprem)
    refused = [
        f"{verb} {o.group}/{o.resource} {o.namespace}/{o.name}"
        for o in objects
        for verb in ("create", "get", "patch", "delete")
        if not allowed(
            cluster.admin,
            DEPLOYER,
            verb,
            f"{o.group}/{o.resource}".lstrip("/"),
            o.namespace or "",
            "" if verb == "create" else o.name,
        )
    ]
    assert len(objects) > 50, len(objects)
    assert refused == [], refused


def test_the_deployer_stored_the_plans_rbac_and_the_server_holds_it(
    cluster: KubeApi, onprem: dict[str, Any]
) -> None:
    """The fixture created them with the deployer's own token: the escalation check let each Role through."""
    roles = cluster.admin.request("GET", f"{RBAC_API}/namespaces/banking/roles")["items"]
    planned = sorted(m["metadata"]["name"] for m in _rbac_objects(onprem) if m["kind"] == "Role")
    assert len(planned) == 3, planned
    assert sorted(r["metadata"]["name"] for r in roles) == planned


def test_a_role_granting_what_the_deployer_lacks_is_forbidden(cluster: KubeApi) -> None:
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "secret-reader", "namespace": "banking"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]}  # fmt: skip
    with pytest.raises(KubeError, match=r"403 .*attempting to grant RBAC permissions not currently held"):
        cluster.client(DEPLOYER.name).request("POST", _path(role), role)
    names = [r["metadata"]["name"] for r in cluster.admin.request("GET", _path(role))["items"]]
    assert "secret-reader" not in names, names


def test_binding_a_role_beyond_the_deployer_is_forbidden(cluster: KubeApi) -> None:
    """The other way up: a RoleBinding to `cluster-admin`, which the deployer neither holds nor may `bind`.
    (Not `admin`: its rules are aggregated by kube-controller-manager a moment after start-up, so whether
    binding it grants anything would depend on timing; `cluster-admin` is complete from the start.)"""
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "self-admin", "namespace": "banking"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": deployer_rbac.GROUP}],
    }
    with pytest.raises(KubeError, match=r"403 .*attempting to grant RBAC permissions not currently held"):
        cluster.client(DEPLOYER.name).request("POST", _path(binding), binding)


def test_the_deployer_cannot_create_a_cluster_role_or_read_another_teams_secrets(cluster: KubeApi) -> None:
    deployer = cluster.client(DEPLOYER.name)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "x"},
        "rules": [],
    }
    with pytest.raises(KubeError, match=r"POST .*/clusterroles: 403 "):
        deployer.request("POST", _path(role), role)
    with pytest.raises(KubeError, match=r"GET .*/namespaces/retail/secrets/db-password: 403 "):
        deployer.request("GET", "api/v1/namespaces/retail/secrets/db-password")


def _deployment(namespace: str) -> dict[str, Any]:
    image = "registry.dc1.example.ae/probe@sha256:" + "0" * 64
    pod = {
        "metadata": {"labels": {"app": "probe"}},
        "spec": {"containers": [{"name": "probe", "image": image}]},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "probe", "namespace": namespace},
        "spec": {"selector": {"matchLabels": {"app": "probe"}}, "template": pod},
    }


def test_a_tenant_deployer_deploys_in_its_namespace_and_not_in_another(cluster: KubeApi) -> None:
    alice = cluster.client(ALICE.name)
    deployment = _deployment("banking")
    created = alice.request("POST", _path(deployment), deployment)
    assert created["metadata"]["namespace"] == "banking", created["metadata"]
    elsewhere = _deployment("retail")
    with pytest.raises(KubeError, match=r"POST .*/namespaces/retail/deployments: 403 "):
        alice.request("POST", _path(elsewhere), elsewhere)


def test_the_granted_resource_names_are_the_ones_the_server_serves(cluster: KubeApi) -> None:
    """A misspelt plural would pass every review and fail the real deploy: check each served group's list."""
    served = {"", "apps", "autoscaling", "batch", "policy", "networking.k8s.io", "storage.k8s.io"}
    served |= {"rbac.authorization.k8s.io", "networking.istio.io", "security.istio.io", "telemetry.istio.io"}
    grants = [(g, r) for g, resources in deployer_rbac.MANAGED for r in resources if g in served]
    missing = [f"{g}/{r}" for g, r in grants if r not in _served_resources(cluster.admin, g)]
    assert len(grants) >= 20, grants
    assert missing == [], f"granted but not served under that name: {missing}"


def _served_resources(admin: ApiServer, group: str) -> set[str]:
    if not group:
        return {r["name"] for r in admin.request("GET", "api/v1")["resources"]}
    versions = admin.request("GET", f"apis/{group}")["versions"]
    return {
        r["name"] for v in versions for r in admin.request("GET", f"apis/{v['groupVersion']}")["resources"]
    }
