"""`make demo`'s real-engine phase: a local control plane (`servectl cluster`), the on-premises stack's
platform layer deployed into it with the real Pulumi engine (`servectl deploy --no-nodes`: the cluster runs
no nodes, docs/cluster.md), its routes and objects read back through the Kubernetes API, then destroyed, and
the control plane stopped, whatever happened.

Two identities, as in production (servectl/deploy/addons.py): the admin deploys the add-ons and grants the
deployer its role; the deployer, a token user holding only that role, deploys the rest and destroys it; the
admin destroys the add-ons.
"""

import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import click
import yaml

from servectl.cluster import kubeconfig as kubeconfigs
from servectl.cluster.controlplane import Binaries, Cluster, ClusterError, up
from servectl.cluster.lifecycle import down
from servectl.cluster.pki import User, new_token
from servectl.cluster.state import Layout
from servectl.demo import REPO_ROOT, Phase, phase
from servectl.deploy.command import command_line
from servectl.experiments.kube import ApiServer, KubeError
from stacks.manifests.deployer_rbac import GROUP as DEPLOYER_GROUP

STACK = "onprem-ae"
DEPLOYER = "platform-deployer"
RBAC_API = "apis/rbac.authorization.k8s.io/v1"
DEPLOY_TIMEOUT = 1500
NAMESPACE_GONE_TIMEOUT = 120.0
COUNTED = {
    "Deployment": "apis/apps/v1/namespaces/{ns}/deployments",
    "Service": "api/v1/namespaces/{ns}/services",
    "VirtualService": "apis/networking.istio.io/v1/namespaces/{ns}/virtualservices",
    "DestinationRule": "apis/networking.istio.io/v1/namespaces/{ns}/destinationrules",
    "AuthorizationPolicy": "apis/security.istio.io/v1/namespaces/{ns}/authorizationpolicies",
    "NetworkPolicy": "apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
    "PrometheusRule": "apis/monitoring.coreos.com/v1/namespaces/{ns}/prometheusrules",
    "RoleBinding": "apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
}
"""What the phase counts in the stack's namespaces (the kinds issue 10 names)."""


def deploy(out: Path, kubeconfig: Path, *args: str) -> tuple[int, str, float]:
    """`servectl deploy` of the stack into the demo's cluster; exit code, output, seconds. The state and its
    passphrase are the demo's own, thrown away with it."""
    command = command_line(STACK, kubeconfig, out / "state", out / "deploy", *args)
    env = {**os.environ, "PULUMI_CONFIG_PASSPHRASE": (out / "passphrase").read_text().strip()}
    started = time.monotonic()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=DEPLOY_TIMEOUT, check=False, cwd=REPO_ROOT, env=env
    )
    log = "-".join(["deploy", *(a.lstrip("-") for a in args)])
    (out / f"{log}.log").write_text(done.stdout + done.stderr)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def routes(api: ApiServer) -> dict[str, dict[str, int]]:
    """Each VirtualService's default route weights, by namespace/name."""
    found = {}
    for vs in api.request("GET", "apis/networking.istio.io/v1/virtualservices")["items"]:
        default = (vs["spec"].get("http") or [{}])[-1].get("route") or []
        name = f"{vs['metadata']['namespace']}/{vs['metadata']['name']}"
        found[name] = {d["destination"].get("subset", "?"): d.get("weight", 0) for d in default}
    return found


def counts(api: ApiServer, namespaces: list[str]) -> dict[str, int]:
    """Objects per kind in `namespaces`."""
    return {
        kind: sum(len(api.request("GET", path.format(ns=ns))["items"]) for ns in namespaces)
        for kind, path in COUNTED.items()
    }


def stack_namespaces(api: ApiServer) -> list[str]:
    """The namespaces the deploy created (every one but the API server's own)."""
    names = [n["metadata"]["name"] for n in api.request("GET", "api/v1/namespaces")["items"]]
    return sorted(n for n in names if not n.startswith("kube-") and n != "default")


def namespaces_left(api: ApiServer, namespaces: list[str]) -> list[str]:
    """Which of `namespaces` still exist once the namespace controller had a bounded time to empty and
    remove them (the engine deletes them without waiting: skipAwait)."""
    deadline = time.monotonic() + NAMESPACE_GONE_TIMEOUT
    while (left := [n for n in stack_namespaces(api) if n in namespaces]) and time.monotonic() < deadline:
        time.sleep(1)
    return left


def _last(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else ""


def _grant(out: Path, cluster: Cluster, deployer: User) -> Path:
    """The admin applies the deployer's ClusterRole and binding the add-ons run wrote; the deployer's
    kubeconfig."""
    for document in yaml.safe_load_all((out / "deploy" / "deployer-rbac.yaml").read_text()):
        kind = "clusterroles" if document["kind"] == "ClusterRole" else "clusterrolebindings"
        cluster.admin.request("POST", f"{RBAC_API}/{kind}", document)
    config = kubeconfigs.build(cluster.url, cluster.ca_file.read_bytes(), deployer.name, deployer.token)
    return kubeconfigs.write(out / "deployer.kubeconfig", config)


def _deploy_and_destroy(out: Path, cluster: Cluster, deployer: User, result: dict[str, Any]) -> None:
    """The add-ons as the admin, the rest as the deployer, read back, then destroyed the same way round."""
    admin, api = cluster.kubeconfig, cluster.admin
    code, text, seconds = deploy(out, admin, "--addons")
    click.echo(f"    add-ons, as the admin: exit {code} in {seconds:.1f} s: {_last(text)}")
    if code == 0:
        as_deployer = _grant(out, cluster, deployer)
        code, text, rest = deploy(out, as_deployer)
        click.echo(f"    the rest, as the deployer ({DEPLOYER}): exit {code} in {rest:.1f} s: {_last(text)}")
        seconds += rest
    result.update(deploy_code=code, deploy_seconds=round(seconds, 1))
    if code != 0:
        click.echo("\n".join("    " + line for line in text.strip().splitlines()[-15:]))
        return
    namespaces = stack_namespaces(api)
    result.update(namespaces=namespaces, routes=routes(api), objects=counts(api, namespaces))
    for name, weights in result["routes"].items():
        click.echo(f"    route {name}: " + ", ".join(f"{s} {w}%" for s, w in weights.items()))
    click.echo("    objects: " + ", ".join(f"{n} {k}" for k, n in result["objects"].items()))
    code, text, seconds = deploy(out, as_deployer, "--destroy")
    click.echo(f"    destroy, as the deployer: exit {code} in {seconds:.1f} s")
    if code == 0:
        code, text, rest = deploy(out, admin, "--destroy", "--addons")
        click.echo(f"    destroy of the add-ons, as the admin: exit {code} in {rest:.1f} s")
        seconds += rest
    result.update(destroy_code=code, destroy_seconds=round(seconds, 1), left=namespaces_left(api, namespaces))
    click.echo(f"    namespaces left: {result['left'] or 'none'}")


def cluster_phase(out: Path, phases: list[Phase]) -> dict[str, Any]:
    """The phase; its figures (times, routes, object counts) or the error that stopped it."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "passphrase").write_text(secrets.token_hex(16) + "\n")
    (out / "passphrase").chmod(0o600)
    result: dict[str, Any] = {"stack": STACK}
    title = f"real engine: local control plane, deploy {STACK}'s platform layer, read the routes, destroy"
    with phase(title, phases) as record:
        layout = Layout(out / "cluster")
        try:
            deployer = User(new_token(), DEPLOYER, (DEPLOYER_GROUP,))
            cluster = up(
                layout, Binaries.installed(), users=(deployer,), progress=lambda m: click.echo(f"    {m}")
            )
        except ClusterError as error:
            click.echo(f"    {error}")
            record.result = "FAIL"
            return {**result, "error": str(error)}
        try:
            _deploy_and_destroy(out, cluster, deployer, result)
        except KubeError as error:
            result["error"] = str(error)
        finally:
            down(layout)
        passed = result.get("deploy_code") == 0 and result.get("destroy_code") == 0 and not result.get("left")
        record.result = "PASS" if passed and "error" not in result else "FAIL"
        result["passed"] = record.result == "PASS"
    return result
