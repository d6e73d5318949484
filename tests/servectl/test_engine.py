"""The pinned Pulumi engine and Kubernetes provider (mk/pulumi.mk) run for real, driven through the Automation
API with `servectl.engine`'s environment, against the real API server of tests/kube_api.py.

What this proves that the mock tests cannot: the CLI and provider `make setup` builds start with plugin
acquisition off (so the SDK's pinned release matches the installed plugin); the provider reaches a real
API server through a kubeconfig; the engine orders the ConfigMap after its Namespace; an update touches
only what changed; `refresh` compares with the live objects (no drift, then drift after an edit behind
its back, which server-side apply then refuses to overwrite); `destroy` deletes from the server.

The Namespace is created by the engine but kept on destroy (`retain_on_delete`): deleting a namespace
needs kube-controller-manager's namespace controller, which tests/kube_api.py does not run, so its
deletion would never finish.
"""

import base64
import re
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import version
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml
from pulumi import automation as auto

from servectl.engine import (
    KUBERNETES_PROVIDER_VERSION,
    EngineError,
    Toolchain,
    engine_env,
    passphrase_env,
    workspace_options,
)
from servectl.experiments.kube import ApiServer, KubeError
from tests.kube_api import ADMIN_TOKEN, KubeApi, kube_api

NAMESPACE = "engine-check"
CONFIGMAP_PATH = f"api/v1/namespaces/{NAMESPACE}/configmaps/settings"
BACKGROUND_DELETE = {"pulumi.com/deletionPropagationPolicy": "background"}
PASSPHRASE = "engine-test-only"
"""Encrypts nothing secret: the test's state holds only a kubeconfig path."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApi]:
    """One API server for this module (10 to 30 s to start)."""
    with kube_api(tmp_path_factory.mktemp("kube"), []) as api:
        yield api


def write_kubeconfig(cluster: KubeApi, path: Path) -> Path:
    """A kubeconfig for the admin token, trusting the fixture's self-signed serving certificate."""
    ca = base64.b64encode(cluster.ca_file.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": cluster.url, "certificate-authority-data": ca}}],
        "users": [{"name": "admin", "user": {"token": ADMIN_TOKEN}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
        "current-context": "local",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def program(kubeconfig: Path, data: dict[str, str]) -> Callable[[], None]:
    """An inline program: a Namespace and a ConfigMap in it, through a provider for `kubeconfig`."""

    def run() -> None:
        # Mutable ConfigMaps: a data change is an update in place, not a replacement.
        provider = k8s.Provider("local", kubeconfig=str(kubeconfig), enable_config_map_mutable=True)
        namespace = k8s.core.v1.Namespace(
            "namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=NAMESPACE),
            opts=pulumi.ResourceOptions(provider=provider, retain_on_delete=True),
        )
        k8s.core.v1.ConfigMap(
            "settings",
            # The provider deletes in the foreground by default, and only the garbage collector (in
            # kube-controller-manager, absent here) removes the foregroundDeletion finalizer: the delete
            # would never finish. Background deletion is removal at once on this server.
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="settings", namespace=namespace.metadata.name, annotations=BACKGROUND_DELETE
            ),
            data=data,
            opts=pulumi.ResourceOptions(provider=provider),
        )

    return run


def stack_for(tmp_path: Path, kubeconfig: Path, data: dict[str, str]) -> auto.Stack:
    """The program's stack in a file backend under `tmp_path`, run by the pinned engine."""
    options = workspace_options(tmp_path / "state", PASSPHRASE)
    return auto.create_or_select_stack(
        stack_name="engine-check",
        project_name="engine-check",
        program=program(kubeconfig, data),
        opts=options,
    )


def changes(summary: Mapping[auto.OpType, int] | None) -> dict[str, int]:
    """The operation counts other than `same`, keyed by the operation's name."""
    counts = {str(getattr(op, "value", op)): n for op, n in (summary or {}).items()}
    return {op: n for op, n in counts.items() if op != "same" and n}


def configmap(admin: ApiServer) -> dict[str, str]:
    data: dict[str, str] = admin.request("GET", CONFIGMAP_PATH)["data"]
    return data


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_pinned_engine_creates_updates_refreshes_and_destroys_objects_on_a_real_api_server(
    cluster: KubeApi, tmp_path: Path
) -> None:
    kubeconfig, admin = write_kubeconfig(cluster, tmp_path / "kubeconfig"), cluster.admin
    first = stack_for(tmp_path, kubeconfig, {"weight": "10"})
    up = first.up()
    assert up.summary.result == "succeeded", up.stderr
    assert changes(up.summary.resource_changes) == {"create": 4}, "stack, provider, Namespace, ConfigMap"
    assert admin.request("GET", f"api/v1/namespaces/{NAMESPACE}")["status"]["phase"] == "Active"
    assert configmap(admin) == {"weight": "10"}, "the ConfigMap as the program declared it"

    stack = stack_for(tmp_path, kubeconfig, {"weight": "25"})
    up = stack.up()
    assert changes(up.summary.resource_changes) == {"update": 1}, "only the ConfigMap changes"
    assert configmap(admin) == {"weight": "25"}, "the update reached the API server"
    assert changes(stack.preview().change_summary) == {}, "a preview after up reports no changes"
    assert changes(stack.refresh().summary.resource_changes) == {}, "refresh finds no drift"

    edited = {"data": {"weight": "99"}}
    admin.request("PATCH", CONFIGMAP_PATH, edited, content_type="application/merge-patch+json")
    assert changes(stack.refresh().summary.resource_changes) == {"update": 1}, "refresh sees the edit"
    # Server-side apply: the hand edit made its client the owner of that field, so `up` refuses to take
    # it back rather than silently overwriting it (what a deploy after a hand edit meets on a real cluster).
    with pytest.raises(auto.CommandError, match=r'conflict with "Python-urllib" using v1: \.data\.weight'):
        stack.up()
    assert configmap(admin) == {"weight": "99"}, "the refused update left the hand edit in place"

    destroyed = stack.destroy()
    assert destroyed.summary.result == "succeeded", destroyed.stderr
    with pytest.raises(KubeError, match=" 404 "):
        admin.request("GET", CONFIGMAP_PATH)
    assert admin.request("GET", f"api/v1/namespaces/{NAMESPACE}")["metadata"]["name"] == NAMESPACE, (
        "the Namespace is retained on destroy (no namespace controller here)"
    )


def test_the_plugin_installed_is_the_release_the_python_sdk_asks_for() -> None:
    sdk = version("pulumi_kubernetes")
    assert sdk == KUBERNETES_PROVIDER_VERSION, f"constraints.txt pins {sdk}, mk/pulumi.mk builds another"
    assert Toolchain().kubernetes_provider.exists(), "run `make setup`"


def test_a_missing_binary_names_it_and_make_setup(tmp_path: Path) -> None:
    toolchain = Toolchain(tools=tmp_path / "tools")
    with pytest.raises(EngineError, match="missing; run `make setup`") as error:
        engine_env(tmp_path / "state", PASSPHRASE, toolchain)
    message = str(error.value)
    assert str(toolchain.pulumi) in message and str(toolchain.kubernetes_provider) in message, message
    assert not (tmp_path / "state").exists(), "nothing is set up when the engine cannot run"


def test_the_built_toolchain_passes_the_check() -> None:
    Toolchain().check()


def test_the_environment_pins_the_engine_and_keeps_it_offline(tmp_path: Path) -> None:
    env = engine_env(tmp_path / "state", PASSPHRASE, base={"PATH": "/usr/bin"})
    toolchain = Toolchain()
    assert env["PATH"] == f"{toolchain.bin_dir}:/usr/bin", "the pinned binaries come first"
    assert env["PULUMI_HOME"] == str(toolchain.home)
    assert env["PULUMI_BACKEND_URL"] == (tmp_path / "state").as_uri() and (tmp_path / "state").is_dir()
    for flag in ("PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION", "PULUMI_SKIP_UPDATE_CHECK"):
        assert env[flag] == "true", flag
    assert env["PULUMI_IGNORE_AMBIENT_PLUGINS"] == "true", "only the plugin directory's exact version is used"
    assert env["PULUMI_CONFIG_PASSPHRASE"] == PASSPHRASE


@pytest.mark.parametrize(
    ("passphrase", "base", "expected"),
    [
        ("given", {"PULUMI_CONFIG_PASSPHRASE": "ambient"}, {"PULUMI_CONFIG_PASSPHRASE": "given"}),
        ("", {}, {"PULUMI_CONFIG_PASSPHRASE": ""}),
        (None, {"PULUMI_CONFIG_PASSPHRASE": "ambient"}, {"PULUMI_CONFIG_PASSPHRASE": "ambient"}),
        (None, {"PULUMI_CONFIG_PASSPHRASE_FILE": "/run/p"}, {"PULUMI_CONFIG_PASSPHRASE_FILE": "/run/p"}),
    ],
)
def test_the_passphrase_is_the_callers_or_the_environments(
    passphrase: str | None, base: dict[str, str], expected: dict[str, str]
) -> None:
    assert passphrase_env(passphrase, base) == expected


def test_no_passphrase_anywhere_is_an_error_not_a_default() -> None:
    with pytest.raises(EngineError, match="PULUMI_CONFIG_PASSPHRASE"):
        passphrase_env(None, {"PATH": "/usr/bin"})


@pytest.mark.slow
def test_a_plugin_missing_from_pulumi_home_fails_the_run_and_is_not_downloaded(tmp_path: Path) -> None:
    empty_home = tmp_path / "home"
    env = {**engine_env(tmp_path / "state", PASSPHRASE), "PULUMI_HOME": str(empty_home)}
    command = auto.PulumiCommand(root=str(Toolchain().tools))
    options = auto.LocalWorkspaceOptions(pulumi_home=str(empty_home), env_vars=env, pulumi_command=command)
    stack = auto.create_or_select_stack(
        stack_name="no-plugin",
        project_name="engine-check",
        program=program(tmp_path / "kubeconfig", {"weight": "10"}),
        opts=options,
    )
    # .tools/bin (first on PATH) holds the same provider binary: ignored, as ambient plugins are.
    plugin = "'pulumi-resource-kubernetes'"
    missing = f"no resource plugin {plugin} found in the workspace at version v{KUBERNETES_PROVIDER_VERSION}"
    with pytest.raises(auto.CommandError, match=re.escape(missing)):
        stack.preview()
    assert not list(empty_home.glob("plugins/resource-kubernetes*")), "acquisition is off: nothing downloaded"
