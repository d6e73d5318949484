"""`servectl deploy` with the real Pulumi engine and Kubernetes provider, into a real control plane
(kube-apiserver, etcd, kube-controller-manager: tests/kube_api.py) that runs no nodes (`--no-nodes`).

The stack is onprem-ae as shipped, from a copy of its stack file so a test can change it. In order: the
pre-flight gate stops a bad change before anything exists; an admin previews the add-ons and applies the
deployer's role it writes; the deployer (a token user holding only that role) is held until the admin has
deployed the add-ons, then creates the rest of the layer, read back through the Kubernetes API; a second
`up` with other weights changes only the routes; `refresh` finds no drift; the deployer's `destroy` leaves
only the add-ons, the admin's nothing. The engine's own preview document passes the gate unchanged, and
its resources are the offline plan's (servectl plan) up to computed values.
"""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from servectl.cluster import kubeconfig
from servectl.deploy.command import command_line
from servectl.experiments.kube import ApiServer, KubeError
from stacks.manifests import deployer_rbac
from tests.kube_api import KubeApi, User, kube_api

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
STACK = "onprem-ae"
PASSPHRASE = "test-only-passphrase"
DEPLOY_TIMEOUT = 1200
NAMESPACE_GONE_TIMEOUT = 120.0
CRDS = "apis/apiextensions.k8s.io/v1/customresourcedefinitions"
ADDON_NAMESPACES = ("cert-manager", "istio-system", "monitoring", "observability")
"""The add-ons' namespaces (servectl/deploy/addons.py): created and removed by the admin."""
DEPLOYER_NAMESPACES = ("banking", "ratelimit")
NAMESPACES = ADDON_NAMESPACES + DEPLOYER_NAMESPACES


def stack_config(project: Path) -> dict[str, Any]:
    settings: dict[str, Any] = yaml.safe_load((project / f"Pulumi.{STACK}.yaml").read_text())
    return settings


def write_models(project: Path, change: Any) -> None:
    """Apply `change` to the models list of the project's stack file."""
    settings = stack_config(project)
    change(settings["config"]["model-serving:models"])
    (project / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))


def without_rollout(models: list[dict[str, Any]]) -> None:
    """Pulumi, not the rollout controller, owns the routes of a model without a rollout block."""
    for model in models:
        model.pop("rollout", None)


DEPLOYER = User("deployer-token", "platform-deployer", (deployer_rbac.GROUP,))
"""A token-file user in the platform deployer's group, holding only what `deployer_rbac` grants it."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApi]:
    with kube_api(tmp_path_factory.mktemp("control-plane"), [DEPLOYER]) as api:
        yield api


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the stack file, its model's routes owned by Pulumi so a weight change is a route change."""
    directory = tmp_path_factory.mktemp("project")
    (directory / f"Pulumi.{STACK}.yaml").write_text((ROOT / f"Pulumi.{STACK}.yaml").read_text())
    write_models(directory, without_rollout)
    return directory


class Deployer:
    """`servectl deploy` as a user runs it, against the module's cluster and state."""

    def __init__(self, cluster: KubeApi, project: Path, work: Path) -> None:
        self.cluster, self.project, self.work = cluster, project, work

    def __call__(
        self, *args: str, project: Path | None = None, config: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        kubeconfig = config or self.cluster.kubeconfig
        assert kubeconfig is not None, "the control plane writes the admin's kubeconfig"
        state, out = self.work / "state", self.work / "out"
        command = command_line(STACK, kubeconfig, state, out, *args, project_dir=project or self.project)
        env = {**os.environ, "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE}
        return subprocess.run(
            command, capture_output=True, text=True, timeout=DEPLOY_TIMEOUT, check=False, cwd=ROOT, env=env
        )

    def preview_document(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads((self.work / "out" / "platform.preview.json").read_text())
        return document


@pytest.fixture(scope="module")
def deploy(cluster: KubeApi, project: Path, tmp_path_factory: pytest.TempPathFactory) -> Deployer:
    return Deployer(cluster, project, tmp_path_factory.mktemp("deploy"))


@pytest.fixture(scope="module")
def as_deployer(cluster: KubeApi, deploy: Deployer) -> Path:
    """A kubeconfig for the deployer token user (its role is granted by a test below, as an admin would)."""
    ca = cluster.ca_file.read_bytes()
    return kubeconfig.write(
        deploy.work / "deployer.kubeconfig", kubeconfig.build(cluster.url, ca, DEPLOYER.name, DEPLOYER.token)
    )


def created(run: subprocess.CompletedProcess[str]) -> int:
    """How many resources a deploy created, from its closing line (`... : create N, same M`)."""
    last = run.stdout.strip().splitlines()[-1]
    counts = dict(part.split(" ") for part in last.split(": ", 1)[1].split(", ")) if ": " in last else {}
    return int(counts.get("create", 0))


def get(api: ApiServer, path: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = api.request("GET", path)
        return found
    except KubeError as error:
        if " 404 " in str(error):
            return None
        raise


def vs_weights(api: ApiServer) -> dict[str, int]:
    vs = get(api, "apis/networking.istio.io/v1/namespaces/banking/virtualservices/tabular-classifier")
    assert vs is not None
    default = vs["spec"]["http"][-1]["route"]
    return {d["destination"]["subset"]: d["weight"] for d in default}


def test_a_bad_change_is_stopped_before_anything_is_created(deploy: Deployer, cluster: KubeApi) -> None:
    original = stack_config(deploy.project)
    write_models(deploy.project, lambda models: models[0]["variants"].update(weights={"1": 50, "2": 50}))
    try:
        run = deploy()
    finally:
        (deploy.project / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(original, sort_keys=False))
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    assert "TRF-003" in run.stderr and "stopped by the policy gate before any change" in run.stderr, (
        run.stderr
    )
    assert get(cluster.admin, "api/v1/namespaces/banking") is None, "the gate runs before up"


@pytest.mark.parametrize(("change", "rule"), [("privileged", "WL-003"), ("permissive-mtls", "IDN-002")])
def test_a_bad_change_to_the_stack_code_is_stopped_by_the_gate(
    deploy: Deployer, cluster: KubeApi, change: str, rule: str
) -> None:
    """A privileged serving container, or the mesh's mTLS relaxed: changes no stack file can express, made
    to the program as a code edit would (bad_change.py), seen in the engine's preview."""
    out = deploy.work / f"bad-{change}"
    command = [sys.executable, "-m", "tests.servectl.deploy.bad_change", change, str(cluster.kubeconfig),
               str(deploy.work / "state"), str(out), str(deploy.project)]  # fmt: skip
    env = {**os.environ, "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE}
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    verdict = json.loads(run.stdout.strip().splitlines()[-1])
    assert verdict["code"] == 1 and any(i.startswith(rule) for i in verdict["denied"]), verdict
    assert get(cluster.admin, "api/v1/namespaces/banking") is None, "a preview changes nothing"


def test_an_admin_previews_the_addons_and_grants_the_deployer_its_role(
    deploy: Deployer, cluster: KubeApi
) -> None:
    """`--addons --preview` changes nothing and writes the deployer's ClusterRole and binding for this
    plan, which the admin applies."""
    run = deploy("--addons", "--preview")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rbac = list(yaml.safe_load_all((deploy.work / "out" / "deployer-rbac.yaml").read_text()))
    assert [d["kind"] for d in rbac] == ["ClusterRole", "ClusterRoleBinding"], rbac
    assert get(cluster.admin, "api/v1/namespaces/istio-system") is None, "a preview changes nothing"
    for document in rbac:
        kind = "clusterroles" if document["kind"] == "ClusterRole" else "clusterrolebindings"
        cluster.admin.request("POST", f"apis/rbac.authorization.k8s.io/v1/{kind}", document)


def test_the_deployer_is_held_until_the_addons_are_deployed(
    deploy: Deployer, cluster: KubeApi, as_deployer: Path
) -> None:
    run = deploy(config=as_deployer)
    assert run.returncode == 3, run.stdout[-3000:] + run.stderr[-3000:]
    assert "HOLD: the add-ons are not as the stack says" in run.stderr, run.stderr[-2000:]
    assert "create ae-dc1-mesh-istiod" in run.stderr and "--addons" in run.stderr, run.stderr[-2000:]
    assert get(cluster.admin, "api/v1/namespaces/banking") is None, "a HOLD changes nothing"


def test_up_creates_the_addons_as_the_admin_and_the_rest_as_the_deployer(
    deploy: Deployer, cluster: KubeApi, as_deployer: Path
) -> None:
    started = time.monotonic()
    run = deploy("--addons")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    print(f"add-ons in {time.monotonic() - started:.1f} s: {run.stdout.strip().splitlines()[-1]}")
    api = cluster.admin
    assert [n for n in ADDON_NAMESPACES if get(api, f"api/v1/namespaces/{n}") is None] == []
    assert [n for n in DEPLOYER_NAMESPACES if get(api, f"api/v1/namespaces/{n}")] == [], "add-ons only"
    addons_created = created(run)
    started = time.monotonic()
    run = deploy(config=as_deployer)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    last = run.stdout.strip().splitlines()[-1]
    print(f"the rest as the deployer in {time.monotonic() - started:.1f} s: {last}")
    rest_created = created(run)
    assert addons_created >= 15 and rest_created >= 60, (addons_created, rest_created)
    for namespace in NAMESPACES:
        assert get(api, f"api/v1/namespaces/{namespace}") is not None, namespace
    assert vs_weights(api) == {"v1": 90, "v2": 10}
    for path in (
        "apis/apps/v1/namespaces/banking/deployments/tabular-classifier-v1",
        "apis/apps/v1/namespaces/banking/deployments/tabular-classifier-v2",
        "api/v1/namespaces/banking/services/tabular-classifier",
        "apis/networking.istio.io/v1/namespaces/banking/destinationrules/tabular-classifier",
        "apis/security.istio.io/v1/namespaces/istio-system/authorizationpolicies/deny-all",
        "apis/security.istio.io/v1/namespaces/istio-system/peerauthentications/default",
        "apis/networking.k8s.io/v1/namespaces/banking/networkpolicies/default-deny",
        "apis/monitoring.coreos.com/v1/namespaces/monitoring/prometheusrules/model-serving",
        "apis/rbac.authorization.k8s.io/v1/namespaces/banking/rolebindings/model-deployer",
        "apis/cert-manager.io/v1/clusterissuers/selfsigned",
    ):
        assert get(api, path) is not None, path
    mtls = get(api, "apis/security.istio.io/v1/namespaces/istio-system/peerauthentications/default")
    assert mtls is not None and mtls["spec"]["mtls"]["mode"] == "STRICT"


def test_the_deployed_admission_policies_refuse_a_root_pod_in_the_model_namespace(cluster: KubeApi) -> None:
    """The layer's own ValidatingAdmissionPolicies, as the engine deployed them, judge the model namespace:
    the serving Deployment's pod spec with root added is refused with the workload rule's id (a bounded
    wait: a binding takes a moment to become active)."""
    served = get(cluster.admin, "apis/apps/v1/namespaces/banking/deployments/tabular-classifier-v1")
    assert served is not None
    spec = served["spec"]["template"]["spec"]
    spec["containers"][0]["securityContext"]["runAsUser"] = 0
    spec["containers"][0]["securityContext"]["runAsNonRoot"] = False
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root-probe"}, "spec": spec}
    deadline, refused = time.monotonic() + 30, ""
    while not refused and time.monotonic() < deadline:
        try:
            cluster.admin.request("POST", "api/v1/namespaces/banking/pods?dryRun=All", pod)
            time.sleep(0.5)
        except KubeError as error:
            refused = str(error)
    assert "WL-001" in refused, refused or "a root pod was admitted for 30 s"


def test_the_deployed_stacks_export_passes_the_gate(deploy: Deployer) -> None:
    """`pulumi stack export` of what was deployed, through the same gate (with the run's stand-in waivers)."""
    out = deploy.work / "out"
    exported = json.loads((out / "platform.export.json").read_text())
    assert len(exported["deployment"]["resources"]) > 80
    waivers = out / "no-nodes-waivers.json"
    report = deploy.work / "export.findings.json"
    command = [sys.executable, "-m", "servectl", "policy", "check", str(out / "platform.export.json"),
               "--project-dir", str(deploy.project), "--data", str(waivers), "--format", "json",
               "--out", str(report)]  # fmt: skip
    gate = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
    assert gate.returncode == 0, gate.stdout[-2000:] + gate.stderr[-1000:]
    summary = json.loads(report.read_text())["summary"]
    granted = json.loads(waivers.read_text())["overrides"]["waivers"]
    assert summary["denied"] == 0 and summary["waived"] == len(granted) >= 8, (summary, len(granted))


def test_the_engines_preview_of_the_shipped_stack_passes_the_gate_and_is_the_offline_plan(
    deploy: Deployer,
) -> None:
    """The shipped stack file, previewed by the engine: the gate passes it unchanged, and its resources are
    exactly the offline plan's (`servectl plan`: URNs and types; inputs up to values only known at apply)."""
    run = deploy("--preview", project=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    real = {s["urn"]: s["newState"] for s in deploy.preview_document()["steps"]}
    out = deploy.work / "offline.json"
    command = [
        sys.executable,
        "-m",
        "servectl",
        "plan",
        "--stack",
        STACK,
        "--layer",
        "platform",
        "--out",
        str(out),
    ]
    offline = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, cwd=ROOT)
    assert offline.returncode == 0, offline.stderr[-1000:]
    planned = {s["urn"]: s["newState"] for s in json.loads(out.read_text())["steps"]}
    assert len(real) > 80 and set(real) == set(planned), sorted(set(real) ^ set(planned))[:20]
    assert {u: r["type"] for u, r in real.items()} == {u: p["type"] for u, p in planned.items()}
    differing = {
        u: d for u in real if real[u].get("custom") and (d := input_differences(real[u], planned[u]))
    }
    assert len(real) > 80 and differing == {}, list(differing.items())[:5]


HARNESS_RELEASE_INPUTS = {"chart", "atomic", "skipAwait", "waitForJobs"}
"""What the no-nodes transform sets on a Helm release (servectl.deploy.no_nodes)."""
SDK_ONLY_INPUTS = {"compat"}
"""Inputs the Python SDK sends that the provider's check drops."""


def input_differences(real: dict[str, Any], planned: dict[str, Any]) -> list[str]:
    """Where the engine's inputs for a resource differ from the offline plan's, once the no-nodes harness's
    own changes are taken out: every input the program sets must be there with the same value, and the
    only inputs the engine may add are the provider's defaults (false, empty) and its internal block."""
    mine, theirs = json.loads(json.dumps(real["inputs"])), dict(planned["inputs"])
    if real["type"] == "kubernetes:helm.sh/v3:Release":
        for key in HARNESS_RELEASE_INPUTS | SDK_ONLY_INPUTS:
            mine.pop(key, None)
            theirs.pop(key, None)
    annotations = (mine.get("metadata") or {}).get("annotations")
    if (
        isinstance(annotations, dict)
        and annotations.pop("pulumi.com/skipAwait", None) == "true"
        and not annotations
    ):
        del mine["metadata"]["annotations"]
    mine.pop("__internal", None)
    if real["type"] == "kubernetes:core/v1:Secret" and "stringData" in theirs and "data" in mine:
        # The provider sends stringData as (secret) data; its values are not in the document to compare.
        del theirs["stringData"], mine["data"]
    return _compare(mine, theirs, "inputs")


def _compare(real: Any, planned: Any, path: str) -> list[str]:
    if isinstance(real, dict) and isinstance(planned, dict):
        found = [f"{path}.{k}: missing" for k, v in planned.items() if k not in real and v not in DEFAULTS]
        found += [
            f"{path}.{k}: added {v!r}" for k, v in real.items() if k not in planned and not _default(k, v)
        ]
        for key in planned.keys() & real.keys():
            found += _compare(real[key], planned[key], f"{path}.{key}")
        return found
    if isinstance(real, list) and isinstance(planned, list) and len(real) == len(planned):
        return [
            d
            for i, (r, p) in enumerate(zip(real, planned, strict=True))
            for d in _compare(r, p, f"{path}[{i}]")
        ]
    if _unknown(planned) or _unknown(real) or real == planned:
        return []
    return [f"{path}: {real!r} != {planned!r}"]


DEFAULTS: tuple[Any, ...] = (False, "", {}, [])
"""Empty values: the provider fills them in for inputs a program leaves out, and drops them where a
program sets them (an empty list of rules, an empty env value)."""


def _default(key: str, value: Any) -> bool:
    """A value the provider adds on its own: an empty one, or the default namespace (which it sets on
    custom resources, cluster-scoped ones too, and the API server ignores there)."""
    return value in DEFAULTS or (key == "namespace" and value == "default")


def _unknown(value: Any) -> bool:
    """The engine's marker of a value only known at apply."""
    return isinstance(value, str) and value.startswith("04da6b54-80e4-46f7-96ec-b56ff0331ba9")


def test_a_weight_change_changes_only_the_routes(deploy: Deployer, cluster: KubeApi) -> None:
    write_models(deploy.project, lambda models: models[0]["variants"].update(weights={"1": 80, "2": 20}))
    run = deploy()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    updated = changes(deploy.preview_document())
    assert [(op, urn.split("::")[-2].split("$")[-1]) for op, urn in updated] == [
        ("update", "kubernetes:networking.istio.io/v1:VirtualService")
    ], updated
    assert vs_weights(cluster.admin) == {"v1": 80, "v2": 20}


def test_a_routine_update_runs_as_the_platform_deployer(
    deploy: Deployer, cluster: KubeApi, as_deployer: Path
) -> None:
    """A weight change, deployed with the identity that holds only the deployer's ClusterRole."""
    write_models(deploy.project, lambda models: models[0]["variants"].update(weights={"1": 75, "2": 25}))
    run = deploy(config=as_deployer)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert vs_weights(cluster.admin) == {"v1": 75, "v2": 25}
    assert [op for op, _ in changes(deploy.preview_document())] == ["update"], "only the routes"


def changes(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(op, urn) of every step that would change something (not same, read or a refresh's read)."""
    return [(s["op"], s["urn"]) for s in document["steps"] if s["op"] not in ("same", "read", "refresh")]


def test_refresh_finds_no_drift_until_an_object_is_changed_behind_the_engines_back(
    deploy: Deployer, cluster: KubeApi
) -> None:
    run = deploy("--preview", "--refresh")
    assert run.returncode == 0, run.stderr[-2000:]
    assert changes(deploy.preview_document()) == [], "no drift right after up"
    path = "api/v1/namespaces/ratelimit/configmaps/ratelimit"
    cluster.admin.request(
        "PATCH", path, {"data": {"config.yaml": "changed: by hand"}}, "application/merge-patch+json"
    )
    run = deploy("--preview", "--refresh")
    assert run.returncode == 0, run.stderr[-2000:]
    drifted = changes(deploy.preview_document())
    # ConfigMaps are immutable to the provider: a changed one is replaced, never patched in place.
    assert len(drifted) == 1 and drifted[0][0] == "replace" and drifted[0][1].endswith("ratelimit"), drifted
    run = deploy("--refresh")
    assert run.returncode == 0, run.stderr[-2000:]
    restored = get(cluster.admin, path)
    assert restored is not None and restored["data"].get("config.yaml") != "changed: by hand"


def gone(cluster: KubeApi, namespaces: tuple[str, ...]) -> list[str]:
    """Which of `namespaces` are still there after a bounded wait: the namespace controller empties and
    removes each one after the delete (skipAwait: the engine does not wait for it)."""
    deadline = time.monotonic() + NAMESPACE_GONE_TIMEOUT
    while (left := [n for n in namespaces if get(cluster.admin, f"api/v1/namespaces/{n}")]) and (
        time.monotonic() < deadline
    ):
        time.sleep(1)
    return left


def test_the_deployers_destroy_leaves_only_the_addons(
    deploy: Deployer, cluster: KubeApi, as_deployer: Path
) -> None:
    started = time.monotonic()
    run = deploy("--destroy", config=as_deployer)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    print(f"the deployer's destroy in {time.monotonic() - started:.1f} s")
    left = gone(cluster, DEPLOYER_NAMESPACES)
    assert left == [], f"namespaces left {NAMESPACE_GONE_TIMEOUT:.0f} s after destroy: {left}"
    assert [n for n in ADDON_NAMESPACES if get(cluster.admin, f"api/v1/namespaces/{n}") is None] == []
    assert "--destroy --addons" in run.stdout, run.stdout[-1000:]


def test_the_admins_destroy_leaves_nothing(deploy: Deployer, cluster: KubeApi) -> None:
    started = time.monotonic()
    run = deploy("--destroy", "--addons")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    print(f"the admin's destroy in {time.monotonic() - started:.1f} s")
    left = gone(cluster, NAMESPACES)
    assert left == [], f"namespaces left {NAMESPACE_GONE_TIMEOUT:.0f} s after destroy: {left}"
    crds = [c["metadata"]["name"] for c in cluster.admin.request("GET", CRDS)["items"]]
    assert "prometheusrules.monitoring.coreos.com" in crds, "charts keep their CRDs (helm's keep policy)"
