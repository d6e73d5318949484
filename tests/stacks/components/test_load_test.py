"""The in-cluster load test: a master Job and a worker Job, bounded, gated, and as locked down as serving."""

from typing import Any

import pytest

from stacks.components.load_test import (
    LoadTest,
    LoadTestArgs,
    config_map,
    master_command,
    master_job,
    master_service,
    network_policy,
    validate,
    worker_job,
)
from tests.stacks.conftest import Built, build_component
from tests.stacks.schemas import validate as validate_object

IMAGE = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/loadtest@sha256:" + "a" * 64
ARGS = LoadTestArgs(
    namespace="payments",
    image=IMAGE,
    target="https://api.eu.example.com",
    grpc_target="grpc.eu.example.com:443",
    profile="step",
    profiles_yaml="step: {}\n",
    slo_yaml="overall: {p95_ms: 250}\n",
    workers=6,
    deadline_s=600,
)


@pytest.fixture(scope="module")
def load_test() -> Built:
    return build_component(lambda opts: LoadTest("lt", ARGS, opts))


def jobs(built: Built) -> dict[str, dict[str, Any]]:
    return {j["metadata"]["name"]: j for j in built.kinds("Job")}


def test_a_master_job_and_a_worker_job_per_worker_count(load_test: Built) -> None:
    found = jobs(load_test)
    assert found.keys() == {"lt-master", "lt-worker"}, found.keys()
    assert found["lt-master"]["spec"]["parallelism"] == 1, "one master"
    assert found["lt-worker"]["spec"]["parallelism"] == 6 == found["lt-worker"]["spec"]["completions"]


def test_master_waits_for_the_workers_and_gates(load_test: Built) -> None:
    command = jobs(load_test)["lt-master"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--expect-workers") + 1] == "6", command
    assert command[command.index("--host") + 1] == "https://api.eu.example.com", command
    assert command[command.index("--slo-file") + 1] == "/config/slo.yaml", command
    assert command[-2:] == ["RestUser", "GrpcUser"], "a gRPC target adds gRPC users"


def test_workers_find_the_master_by_its_service(load_test: Built) -> None:
    (service,) = load_test.kinds("Service")
    command = jobs(load_test)["lt-worker"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--master-host") + 1] == service["metadata"]["name"] == "lt-master", command
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "master", service["spec"]


def test_jobs_are_bounded_and_never_retried(load_test: Built) -> None:
    assert len(jobs(load_test)) == 2, "the master and the workers"
    for name, job in jobs(load_test).items():
        assert job["spec"]["activeDeadlineSeconds"] == 600, f"{name} must be bounded in time"
        assert job["spec"]["backoffLimit"] == 0, f"{name}: a failed gate is not retried"


def test_containers_are_locked_down(load_test: Built) -> None:
    assert len(jobs(load_test)) == 2, "the master and the workers"
    for name, job in jobs(load_test).items():
        ctx = job["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        assert ctx["runAsNonRoot"] and ctx["readOnlyRootFilesystem"], f"{name}: {ctx}"
        assert ctx["capabilities"] == {"drop": ["ALL"]} and not ctx["allowPrivilegeEscalation"], (
            f"{name}: {ctx}"
        )


def test_profiles_and_gates_come_from_the_config_map(load_test: Built) -> None:
    (config,) = load_test.kinds("ConfigMap")
    assert config["data"] == {"profiles.yaml": "step: {}\n", "slo.yaml": "overall: {p95_ms: 250}\n"}, config
    volumes = jobs(load_test)["lt-master"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": "lt-config"}} in volumes, volumes


def test_network_policy_lets_workers_reach_the_master_only_on_its_port(load_test: Built) -> None:
    (policy,) = load_test.kinds("NetworkPolicy")
    assert policy["spec"]["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": {"app": "lt"}}}],
            "ports": [{"protocol": "TCP", "port": 5557}],
        }
    ], policy["spec"]


def test_without_grpc_target_only_rest_users() -> None:
    args = LoadTestArgs(**{**vars(ARGS), "grpc_target": None})
    assert master_command(args)[-1] == "RestUser" and "--grpc-target" not in master_command(args)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"image": "locust:latest"}, "pinned by digest"),
        ({"workers": 0}, "at least one worker"),
        ({"target": "api.example.com"}, "http\\(s\\) URL"),
    ],
)
def test_invalid_arguments_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate(LoadTestArgs(**{**vars(ARGS), **changes}))


def test_manifests_are_valid_kubernetes_objects() -> None:
    for build in (config_map, master_service, master_job, worker_job, network_policy):
        validate_object(build(ARGS, "lt"))
