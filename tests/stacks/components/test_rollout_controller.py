"""One model's rollout controller built alone under mocks: what it may do in the cluster (RBAC), how it
runs (the restricted security context), that Pulumi leaves the routes it steps alone, and its alerts."""

from dataclasses import replace

import pulumi
import pytest

from stacks.artifacts import load_lock
from stacks.components.model_serving import ModelServing, ModelServingArgs
from stacks.components.monitoring import Monitoring, MonitoringArgs
from stacks.components.rollout_controller import RolloutController, RolloutControllerArgs
from stacks.manifests import rollout_controller as rc
from stacks.manifests.serving import ServingSpec, restricted_security_context
from stacks.settings import StackConfig
from tests.stacks.conftest import Built, build_component
from tests.stacks.schemas import validate

REGISTRY = "123456789012.dkr.ecr.eu-central-1.amazonaws.com"
IMAGE = f"{REGISTRY}/model-serving-retrain@sha256:" + "c" * 64


@pytest.fixture(scope="module")
def built(eu_config: StackConfig) -> Built:
    model = eu_config.models[0]
    assert model.rollout is not None, "the eu-prod model under test has a rollout block"
    args = RolloutControllerArgs(
        model=model, image=pulumi.Output.from_input(IMAGE), storage_class="encrypted-gp3"
    )
    return build_component(lambda opts: RolloutController("rc", args, opts))


def test_every_object_is_created_and_validates(built: Built) -> None:
    kinds = sorted(r.type.rsplit(":", 1)[-1] for r in built.registrations if r.type.startswith("kubernetes:"))
    expected = ["Deployment", "NetworkPolicy", "PersistentVolumeClaim", "PodMonitor", "Role", "RoleBinding",
                "ServiceAccount"]  # fmt: skip
    assert kinds == expected, kinds
    rbac = "rbac.authorization.k8s.io/v1"
    apis = {"Deployment": "apps/v1", "NetworkPolicy": "networking.k8s.io/v1",
            "PodMonitor": "monitoring.coreos.com/v1", "Role": rbac, "RoleBinding": rbac}  # fmt: skip
    for kind in expected:
        (inputs,) = built.kinds(kind)
        body = {k: v for k, v in inputs.items() if k not in {"apiVersion", "kind"}}
        validate({"apiVersion": apis.get(kind, "v1"), "kind": kind} | body)


def test_the_role_allows_get_and_patch_on_its_one_virtual_service_and_creating_events_only(
    built: Built, eu_config: StackConfig
) -> None:
    model = eu_config.models[0]
    (role,) = built.kinds("Role")
    assert role["metadata"]["namespace"] == model.tenant, role["metadata"]
    assert role["rules"] == [
        {"apiGroups": ["networking.istio.io"], "resources": ["virtualservices"],
         "resourceNames": [model.name], "verbs": ["get", "patch"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
    ], f"nothing beyond its VirtualService and Events: {role['rules']}"  # fmt: skip
    assert not [r for r in built.registrations if "ClusterRole" in r.type], "no cluster-wide permission"


def test_the_binding_grants_the_role_to_the_controllers_account_alone(
    built: Built, eu_config: StackConfig
) -> None:
    (binding,) = built.kinds("RoleBinding")
    (account,) = built.kinds("ServiceAccount")
    name = account["metadata"]["name"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": name, "namespace": eu_config.models[0].tenant}
    ], binding["subjects"]
    deployment = built.one("kubernetes:apps/v1:Deployment").inputs
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == name


def test_the_deployment_runs_restricted_like_the_other_workloads(built: Built) -> None:
    spec = built.one("kubernetes:apps/v1:Deployment").inputs["spec"]
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    assert container["securityContext"] == restricted_security_context(), container["securityContext"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True, "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}
    }, pod["securityContext"]  # fmt: skip
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert limits == requests, "requests equal limits, so the tenant quota counts the pod exactly"
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}, "never two controllers at once"
    assert container["image"] == IMAGE, container["image"]


def test_the_controller_runs_the_stacks_schedule_against_its_virtual_service(
    built: Built, eu_config: StackConfig
) -> None:
    model = eu_config.models[0]
    [container] = built.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]["spec"]["containers"]
    args = dict(zip(container["command"][3::2], container["command"][4::2], strict=True))
    assert container["command"][:3] == ["servectl", "experiment", "controller"], container["command"]
    rollout = model.rollout
    assert rollout is not None
    assert args["--virtual-service"] == f"{model.tenant}/{model.name}", args
    assert args["--steps"] == ",".join(map(str, rollout.steps)), args
    assert args["--interval"] == str(rollout.interval_seconds), args
    assert args["--log"].startswith(rc.LOG_DIR + "/"), "the log is on the volume, which survives restarts"


def test_a_model_without_a_rollout_block_is_refused(eu_config: StackConfig) -> None:
    model = replace(eu_config.models[0], rollout=None)
    with pytest.raises(ValueError, match="has no rollout block"):
        rc.command(model)


def _virtual_service(eu_config: StackConfig, with_rollout: bool) -> tuple[str, ...]:
    model = eu_config.models[0]
    model = model if with_rollout else replace(model, rollout=None)
    spec = ServingSpec(
        model=model, image=eu_config.image.serving_image(REGISTRY),
        sync_image=load_lock().image("aws-cli").ref(REGISTRY), region="eu-central-1",
        service_account=model.name, gateway="istio-system/model-api", api_host=eu_config.gateway.api_host,
    )  # fmt: skip
    args = ModelServingArgs(spec=spec, jwt_issuer=eu_config.gateway.jwt_issuer, bucket="b", role_arn=None)
    built = build_component(lambda opts: ModelServing("m", args, opts))
    return built.one("kubernetes:networking.istio.io/v1:VirtualService").ignore_changes


def test_pulumi_keeps_the_routes_the_controller_steps(eu_config: StackConfig) -> None:
    """Fails if a `pulumi up` would write the stack file's weights over the controller's: the engine keeps
    the state's value of an ignored input on update, and here the routes (weights and sticky buckets)."""
    assert _virtual_service(eu_config, with_rollout=True) == ("spec.http",)
    assert _virtual_service(eu_config, with_rollout=False) == (), (
        "without a controller Pulumi owns the routes"
    )


def test_the_monitoring_stack_deploys_the_rollback_and_halt_alerts() -> None:
    args = MonitoringArgs(registry=REGISTRY, key_arn=None, retention_days=15, storage_gib=100,
                          webhook_urls=("https://hooks.example.eu/T0/x",))  # fmt: skip
    monitoring = build_component(lambda opts: Monitoring("mon", args, opts))
    rules = [r.inputs for r in monitoring.of_type("kubernetes:monitoring.coreos.com/v1:PrometheusRule")]
    experiments = [r for r in rules if r["metadata"]["name"] == "model-serving-experiments"]
    assert len(experiments) == 1, [r["metadata"]["name"] for r in rules]
    alerts = {rule["alert"] for group in experiments[0]["spec"]["groups"] for rule in group["rules"]}
    assert alerts == {"ExperimentRolledBack", "ExperimentHalted", "ExperimentSampleRatioMismatch"}, alerts
