"""The admission policies in a real kube-apiserver v1.34 (tests/kube_api.py): applied as the platform layer
builds them, bad Pods created directly in a tenant namespace are refused with the gate's rule ids, the
platform's own workloads are admitted, and namespaces without the tenant label are not judged.

What only the real server shows: that the CEL compiles and means what the builders say (on the kinds it
matches, with the defaults the server applies before admission), that a refusal is a 403 whose message
carries the rule id, that bindings select namespaces by label, and how the policies stack with Pod Security
Admission (baseline, on every Tenancy namespace), which the server runs before them.

The cluster runs with `--allow-privileged=true` (servectl.cluster sets it), as EKS does (the Istio CNI
node agent the platform deploys is privileged): without it the server refuses a privileged container
itself, before any policy sees it.
"""

import time
from collections.abc import Iterator
from copy import deepcopy
from typing import Any

import pytest

from servectl.experiments.kube import ApiServer, KubeError
from stacks.artifacts import load_lock
from stacks.components.cluster import IDENTITY_GROUP_PREFIX
from stacks.manifests import admission, async_inference, serving, tenancy
from stacks.manifests import features as feature_manifests
from stacks.manifests.mesh import istiod_values
from stacks.settings import StackConfig
from tests.kube_api import KubeApi, User, kube_api

pytestmark = pytest.mark.slow

REGISTRY = "345678901234.dkr.ecr.eu-central-1.amazonaws.com/eu-prod"
DIGEST = "sha256:" + "b" * 64
ADMISSION = "apis/admissionregistration.k8s.io/v1"
JUDGED = "judged"
"""A namespace with the tenant label alone: the policies' own refusals, with no Pod Security in front."""
FREE = "unlabelled"
DEPLOYER = "tenant-deployer"
"""A token-file user in the first tenant's deployer group, as the identity provider maps it."""
ACTIVE_TIMEOUT = 30.0
"""Bindings take effect once the server's policy informer has compiled them: about a second here."""


def _namespace(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _create_namespace(api: ApiServer, manifest: dict[str, Any], accounts: tuple[str, ...] = ()) -> None:
    """The namespace and its service accounts (no controller-manager here mints the `default` one)."""
    name = manifest["metadata"]["name"]
    api.request("POST", "api/v1/namespaces", manifest)
    for account in ("default", *accounts):
        body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}}
        api.request("POST", f"api/v1/namespaces/{name}/serviceaccounts", body)


def _good_container(name: str = "server") -> dict[str, Any]:
    return {
        "name": name,
        "image": f"{REGISTRY}/serving@{DIGEST}",
        "securityContext": serving.restricted_security_context(),
    }


def _pod(name: str, namespace: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": containers, **spec},
    }


def _with(container: dict[str, Any], **security: Any) -> dict[str, Any]:
    return container | {"securityContext": container["securityContext"] | security}


def _without(container: dict[str, Any], *fields: str) -> dict[str, Any]:
    security = {k: v for k, v in container["securityContext"].items() if k not in fields}
    return container | {"securityContext": security}


def _probes() -> list[tuple[str, dict[str, Any]]]:
    """A root workload of each shape, for a dry run in the judged namespace (nothing is stored)."""
    root = [_with(_good_container(), runAsUser=0)]
    template = {
        "metadata": {"labels": {"app": "probe"}},
        "spec": {"containers": root, "restartPolicy": "Never"},
    }
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "probe"},
                  "spec": {"selector": {"matchLabels": {"app": "probe"}},
                           "template": template | {"spec": {"containers": root}}}}  # fmt: skip
    cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "probe"},
            "spec": {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": template}}}}  # fmt: skip
    return [
        (f"api/v1/namespaces/{JUDGED}/pods", _pod("probe", JUDGED, root)),
        (f"apis/apps/v1/namespaces/{JUDGED}/deployments", deployment),
        (f"apis/batch/v1/namespaces/{JUDGED}/cronjobs", cron),
    ]


def _wait_active(api: ApiServer) -> float:
    """Until every shape's binding refuses a root workload, or time out; the seconds it took. Each policy
    is compiled and its binding picked up on its own, so each is probed."""
    start = time.monotonic()
    for path, body in _probes():
        while True:
            try:
                api.request("POST", f"{path}?dryRun=All", body)
            except KubeError as refused:
                if "WL-001" in str(refused):
                    break
                raise
            if time.monotonic() - start > ACTIVE_TIMEOUT:
                raise TimeoutError(f"{path}: the binding was not active after {ACTIVE_TIMEOUT}s")
            time.sleep(0.2)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, eu_config: StackConfig) -> Iterator[KubeApi]:
    """The API server with the three policies and bindings as the platform layer builds them, a namespace
    with only the tenant label, eu-prod's Tenancy namespaces exactly as built, and an unlabelled one."""
    tenant = eu_config.tenants[0]
    deployer = User("deployer-token", DEPLOYER, (f"{IDENTITY_GROUP_PREFIX}{tenant.deployer_groups[0]}",))
    with kube_api(tmp_path_factory.mktemp("admission"), [deployer]) as api:
        admin = api.admin
        for shape in admission.SHAPES:
            admin.request(
                "POST", f"{ADMISSION}/validatingadmissionpolicies", admission.policy(shape, REGISTRY)
            )
            admin.request("POST", f"{ADMISSION}/validatingadmissionpolicybindings", admission.binding(shape))
        _create_namespace(admin, _namespace(JUDGED, {tenancy.TENANT_LABEL: JUDGED}))
        _create_namespace(admin, _namespace(FREE, {}))
        for tenant in eu_config.tenants:
            accounts = tuple(m.name for m in eu_config.models if m.tenant == tenant.name)
            _create_namespace(admin, tenancy.namespace(tenant), (*accounts, feature_manifests.NAME))
            rbac = f"apis/rbac.authorization.k8s.io/v1/namespaces/{tenant.name}"
            for role in tenancy.roles(tenant):
                admin.request("POST", f"{rbac}/roles", role)
            for binding in tenancy.role_bindings(tenant, IDENTITY_GROUP_PREFIX):
                admin.request("POST", f"{rbac}/rolebindings", binding)
        _wait_active(admin)
        yield api


def _refused(api: ApiServer, path: str, body: dict[str, Any]) -> str:
    """The server's refusal of a create; fails the test if it was admitted."""
    with pytest.raises(KubeError) as refused:
        api.request("POST", path, body)
    return str(refused.value)


BAD_PODS: list[tuple[str, list[dict[str, Any]], dict[str, Any], str, str]] = [
    ("root", [_with(_good_container(), runAsUser=0)], {}, "WL-001", "container(s) server may run as root"),
    ("root-init", [_good_container()],
     {"initContainers": [_with(_good_container("sync"), runAsNonRoot=False)]},
     "WL-001", "container(s) sync may run as root"),
    ("privileged", [_with(_good_container(), privileged=True, allowPrivilegeEscalation=True)], {}, "WL-003",
     "container(s) server may escalate privileges"),
    ("escalation", [_with(_good_container(), allowPrivilegeEscalation=True)], {}, "WL-003",
     "container(s) server may escalate privileges"),
    ("escalation-unset", [_without(_good_container(), "allowPrivilegeEscalation")], {}, "WL-003",
     "container(s) server may escalate privileges"),
    ("non-root-unset", [_without(_good_container(), "runAsNonRoot")], {}, "WL-001",
     "container(s) server may run as root"),
    ("host-network", [_good_container()], {"hostNetwork": True}, "WL-009",
     "Pod host-network shares the host namespaces hostNetwork"),
    ("host-pid", [_good_container()], {"hostPID": True}, "WL-009",
     "Pod host-pid shares the host namespaces hostPID"),
    ("tag", [_good_container() | {"image": f"{REGISTRY}/serving:1.0"}], {}, "WL-007",
     "container(s) server use an image not pinned by digest"),
    ("foreign", [_good_container() | {"image": f"ghcr.io/acme/serving@{DIGEST}"}], {}, "WL-008",
     f"container(s) server use an image from outside the approved registry {REGISTRY}"),
    ("lookalike", [_good_container() | {"image": f"{REGISTRY}-evil/serving@{DIGEST}"}], {}, "WL-008",
     "use an image from outside the approved registry"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "containers", "spec", "rule_id", "detail"), BAD_PODS, ids=[b[0] for b in BAD_PODS]
)
def test_a_bad_pod_is_refused_with_the_rule_id(
    cluster: KubeApi,
    name: str,
    containers: list[dict[str, Any]],
    spec: dict[str, Any],
    rule_id: str,
    detail: str,
) -> None:
    message = _refused(
        cluster.admin, f"api/v1/namespaces/{JUDGED}/pods", _pod(name, JUDGED, containers, **spec)
    )
    policy = f"{admission.NAME}-pods"
    assert f": 403 pods \"{name}\" is forbidden: ValidatingAdmissionPolicy '{policy}'" in message, message
    assert f"denied request: {rule_id}: " in message, message
    assert detail in message, message


def test_the_same_pod_in_an_unlabelled_namespace_is_not_judged(cluster: KubeApi) -> None:
    for name, containers, spec, _, _ in BAD_PODS:
        body = _pod(name, FREE, containers, **spec)
        stored = cluster.admin.request("POST", f"api/v1/namespaces/{FREE}/pods", body)
        assert stored["metadata"]["name"] == name, stored["metadata"]
    stored_names = {
        p["metadata"]["name"] for p in cluster.admin.request("GET", f"api/v1/namespaces/{FREE}/pods")["items"]
    }
    assert {b[0] for b in BAD_PODS} <= stored_names, stored_names


def test_a_good_pod_is_admitted_and_a_later_unpinned_image_refused(cluster: KubeApi) -> None:
    path = f"api/v1/namespaces/{JUDGED}/pods"
    stored = cluster.admin.request("POST", path, _pod("good", JUDGED, [_good_container()]))
    assert stored["metadata"]["name"] == "good", stored["metadata"]
    patch = {"spec": {"containers": [{"name": "server", "image": f"{REGISTRY}/serving:latest"}]}}
    with pytest.raises(
        KubeError, match=r"PATCH .*: 403 .*denied request: WL-007: Pod good: container\(s\) server"
    ):
        cluster.admin.request("PATCH", f"{path}/good", patch, "application/strategic-merge-patch+json")


def test_a_container_may_take_non_root_from_the_pod(cluster: KubeApi) -> None:
    """As in pods.rego: the container's field wins, else the pod's."""
    inherits = _without(_good_container(), "runAsNonRoot", "runAsUser")
    body = _pod("inherits", JUDGED, [inherits], securityContext={"runAsNonRoot": True, "runAsUser": 10001})
    stored = cluster.admin.request("POST", f"api/v1/namespaces/{JUDGED}/pods", body)
    assert stored["metadata"]["name"] == "inherits", stored["metadata"]
    overridden = _pod(
        "overrides", JUDGED, [_with(inherits, runAsUser=0)], securityContext={"runAsNonRoot": True}
    )
    message = _refused(cluster.admin, f"api/v1/namespaces/{JUDGED}/pods", overridden)
    assert "denied request: WL-001: Pod overrides: container(s) server may run as root" in message, message


def test_a_pod_template_is_judged_before_any_pod_exists(cluster: KubeApi) -> None:
    """The Deployment itself is refused (no ReplicaSet left failing quietly), and a CronJob's template."""
    template = {
        "metadata": {"labels": {"app": "x"}},
        "spec": {"containers": [_with(_good_container(), runAsUser=0)]},
    }
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "root-deploy"},
                  "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template}}  # fmt: skip
    message = _refused(cluster.admin, f"apis/apps/v1/namespaces/{JUDGED}/deployments", deployment)
    assert f"'{admission.NAME}-templates'" in message and "WL-001: Deployment root-deploy: " in message, (
        message
    )
    unpinned = [_good_container() | {"image": "busybox:1.36"}]
    tagged = {"metadata": {}, "spec": {"restartPolicy": "Never", "containers": unpinned}}
    cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tagged"},
            "spec": {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": tagged}}}}  # fmt: skip
    message = _refused(cluster.admin, f"apis/batch/v1/namespaces/{JUDGED}/cronjobs", cron)
    assert f"'{admission.NAME}-cronjobs'" in message and "WL-007: CronJob tagged: " in message, message


def _serving_spec(cfg: StackConfig, model_index: int) -> serving.ServingSpec:
    """What deploy_cluster builds for a model, with the cluster's registry."""
    model = cfg.models[model_index]
    return serving.ServingSpec(
        model=model, image=cfg.image.serving_image(REGISTRY),
        sync_image=load_lock().image("aws-cli").ref(REGISTRY), region="eu-central-1",
        service_account=model.name, gateway="istio-system/model-api", api_host=cfg.gateway.api_host,
    )  # fmt: skip


def injected(template: dict[str, Any], namespace: str, name: str) -> dict[str, Any]:
    """The Pod a ReplicaSet creates from `template` once the mesh's injector has run, rendered from Istio's
    sidecar template (manifests/charts/istio-control/istio-discovery/files/injection-template.yaml) for the
    values the platform gives istiod: with the CNI node agent the init container only validates the
    redirection, as uid 1337 (without CNI it would be `istio-init`, root with NET_ADMIN, which WL-001
    refuses); with native sidecars the proxy is an init container that keeps running. Both images are the
    proxy image in the cluster's registry. istiod cannot run here (no kubelet, no chart), so the
    template's output is written down, branch by branch, from the same values."""
    values = istiod_values(REGISTRY)
    cni, native = (
        values["pilot"]["cni"]["enabled"],
        values["pilot"]["env"]["ENABLE_NATIVE_SIDECARS"] == "true",
    )
    proxy_user = {
        "runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": True, "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False, "privileged": False, "capabilities": {"drop": ["ALL"]},
    }  # fmt: skip
    init_security = (
        proxy_user
        if cni
        else {"runAsUser": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False, "privileged": False,
              "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}}
    )  # fmt: skip
    validation = {
        "name": "istio-validation" if cni else "istio-init", "image": values["global"]["proxy_init"]["image"],
        "args": ["istio-iptables", "--run-validation", "--skip-rule-apply"], "securityContext": init_security,
    }  # fmt: skip
    proxy = {"name": "istio-proxy", "image": values["global"]["proxy"]["image"], "args": ["proxy", "sidecar"],
             "securityContext": proxy_user} | ({"restartPolicy": "Always"} if native else {})  # fmt: skip
    spec = dict(template["spec"])
    spec["initContainers"] = [validation, *([proxy] if native else []), *spec.get("initContainers", [])]
    spec["containers"] = [*spec["containers"], *([] if native else [proxy])]
    metadata = {"name": name, "namespace": namespace, "labels": template["metadata"]["labels"]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def test_the_platforms_own_workloads_are_admitted_in_their_tenant_namespace(
    cluster: KubeApi, eu_config: StackConfig
) -> None:
    """The serving Deployment, its pod as the mesh injects it, the async workers and the feature CronJob,
    as the stack builds them, in the Tenancy namespace as built (Pod Security baseline enforced too)."""
    admin, spec = cluster.admin, _serving_spec(eu_config, 0)
    namespace = spec.model.tenant
    deployment = serving.deployment(spec, spec.model.variants.versions[0])
    stored = admin.request("POST", f"apis/apps/v1/namespaces/{namespace}/deployments", deployment)
    assert stored["metadata"]["name"] == deployment["metadata"]["name"], stored["metadata"]
    pod = injected(deployment["spec"]["template"], namespace, "served-0")
    assert {c["name"] for c in pod["spec"]["initContainers"]} >= {
        "istio-validation",
        "istio-proxy",
        "model-sync",
    }
    assert admin.request("POST", f"api/v1/namespaces/{namespace}/pods", pod)["metadata"]["name"] == "served-0"
    workers = [i for i, m in enumerate(eu_config.models) if m.async_workers is not None]
    assert workers, "eu-prod has a model with async workers"
    worker = async_inference.worker_deployment(_serving_spec(eu_config, workers[0]))
    stored = admin.request(
        "POST", f"apis/apps/v1/namespaces/{worker['metadata']['namespace']}/deployments", worker
    )
    assert stored["metadata"]["name"] == worker["metadata"]["name"], stored["metadata"]
    assert eu_config.features is not None, "eu-prod has a feature store"
    job = feature_manifests.cron_job(
        feature_manifests.FeatureJobSpec(
            namespace=eu_config.features.tenant, image=eu_config.image.retrain_image(REGISTRY),
            schedule="*/30 * * * *", role_arn="arn:aws:iam::345678901234:role/features",
            region="eu-central-1", offline_root="s3://b/features/",
        )
    )  # fmt: skip
    stored = admin.request("POST", f"apis/batch/v1/namespaces/{eu_config.features.tenant}/cronjobs", job)
    assert stored["metadata"]["name"] == job["metadata"]["name"], stored["metadata"]


def test_a_tenants_deployer_is_refused_by_the_policy_not_by_rbac(
    cluster: KubeApi, eu_config: StackConfig
) -> None:
    """The case no plan shows: a deployer group creating a Deployment in its own namespace. RBAC lets it
    (the Role grants Deployments), the policy refuses the root one and admits the stack's own."""
    deployer, spec = cluster.client(DEPLOYER), _serving_spec(eu_config, 0)
    namespace = eu_config.tenants[0].name
    assert spec.model.tenant == namespace, "the first model belongs to the first tenant"
    good = serving.deployment(spec, spec.model.variants.versions[-1])
    good["metadata"]["name"] = "deployed-by-tenant"
    stored = deployer.request("POST", f"apis/apps/v1/namespaces/{namespace}/deployments", good)
    assert stored["metadata"]["name"] == "deployed-by-tenant", stored["metadata"]
    bad = deepcopy(good)
    bad["metadata"]["name"] = "root-by-tenant"
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = 0
    message = _refused(deployer, f"apis/apps/v1/namespaces/{namespace}/deployments", bad)
    assert "denied request: WL-001: Deployment root-by-tenant: container(s) server may run as root" in message


def test_an_injected_pod_without_the_cni_agent_would_be_refused(
    cluster: KubeApi, eu_config: StackConfig
) -> None:
    """Why the platform needs Istio CNI in tenant namespaces: the classic `istio-init` runs as root."""
    spec = _serving_spec(eu_config, 0)
    pod = injected(
        serving.deployment(spec, spec.model.variants.versions[0])["spec"]["template"], JUDGED, "no-cni"
    )
    root = {"runAsUser": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False, "privileged": False}
    pod["spec"]["initContainers"][0] |= {"name": "istio-init", "securityContext": root}
    pod["spec"]["serviceAccountName"] = "default"
    message = _refused(cluster.admin, f"api/v1/namespaces/{JUDGED}/pods", pod)
    assert "denied request: WL-001: Pod no-cni: container(s) istio-init may run as root" in message, message


def test_in_a_tenancy_namespace_pod_security_refuses_host_namespaces_first(
    cluster: KubeApi, eu_config: StackConfig
) -> None:
    """Both layers guard it: Pod Security's baseline runs first; root, which baseline allows, is ours."""
    namespace = eu_config.tenants[0].name
    path = f"api/v1/namespaces/{namespace}/pods"
    message = _refused(cluster.admin, path, _pod("host", namespace, [_good_container()], hostNetwork=True))
    assert 'violates PodSecurity "baseline:latest": host namespaces' in message, message
    message = _refused(cluster.admin, path, _pod("root", namespace, [_with(_good_container(), runAsUser=0)]))
    assert "denied request: WL-001: Pod root: container(s) server may run as root" in message, message


def test_the_cluster_admits_privileged_pods_where_no_policy_applies(cluster: KubeApi) -> None:
    """Else the privileged case above would be the server's own refusal, not the policy's."""
    body = _pod(
        "privileged-free", FREE, [_with(_good_container(), privileged=True, allowPrivilegeEscalation=True)]
    )
    assert (
        cluster.admin.request("POST", f"api/v1/namespaces/{FREE}/pods", body)["metadata"]["name"]
        == "privileged-free"
    )


def test_the_policies_are_stored_as_built(cluster: KubeApi) -> None:
    """Nothing was dropped or defaulted away from what the builders wrote."""
    stored_names = {
        p["metadata"]["name"]
        for p in cluster.admin.request("GET", f"{ADMISSION}/validatingadmissionpolicies")["items"]
    }
    assert stored_names == {f"{admission.NAME}-{s.name}" for s in admission.SHAPES}, stored_names
    for shape in admission.SHAPES:
        built = admission.policy(shape, REGISTRY)
        stored = cluster.admin.request(
            "GET", f"{ADMISSION}/validatingadmissionpolicies/{built['metadata']['name']}"
        )
        for key in ("variables", "validations", "failurePolicy"):
            assert stored["spec"][key] == built["spec"][key], (shape.name, key)
