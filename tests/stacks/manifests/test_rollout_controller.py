"""The rollout controller's manifests and its alert rules (promtool on the rules file and its tests)."""

import shutil
import subprocess
from dataclasses import replace

import pytest

from stacks.manifests import rollout_controller as rc
from stacks.manifests import serving
from stacks.manifests.monitoring import EXPERIMENT_RULES_FILE, load_rules
from stacks.settings import StackConfig


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make setup` installs Debian's prometheus package"
    return subprocess.run(
        [promtool, *args], cwd=EXPERIMENT_RULES_FILE.parent, capture_output=True, text=True, check=False
    )


def test_the_experiment_rules_pass_promtool_check() -> None:
    result = _promtool("check", "rules", EXPERIMENT_RULES_FILE.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_experiment_rules_pass_their_promtool_unit_tests() -> None:
    result = _promtool("test", "rules", EXPERIMENT_RULES_FILE.with_name("experiment-rules_test.yaml").name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_read_the_metrics_the_controller_exports() -> None:
    rules = {r["alert"]: r for g in load_rules(EXPERIMENT_RULES_FILE)["groups"] for r in g["rules"]}
    assert "serving_experiment_rolled_back_timestamp_seconds" in rules["ExperimentRolledBack"]["expr"]
    assert "serving_experiment_last_analysis_timestamp_seconds" in rules["ExperimentHalted"]["expr"]
    assert 'serving_experiment_halted{reason="srm"}' in rules["ExperimentSampleRatioMismatch"]["expr"]


def test_serving_selectors_never_pick_up_the_controller(eu_config: StackConfig) -> None:
    """The model's Service, PDB and NetworkPolicy select `app: <model>`; the controller's pods must not
    match, or the Service would route inference to it."""
    model = eu_config.models[0]
    pod = rc.labels(model)
    selector = serving.service(model)["spec"]["selector"]
    assert not all(pod.get(k) == v for k, v in selector.items()), (pod, selector)
    assert rc.pod_monitor(model)["spec"]["selector"]["matchLabels"] == pod


@pytest.mark.parametrize("port", [rc.PROMETHEUS_PORT, 443])
def test_the_network_policy_opens_prometheus_and_the_api_server(eu_config: StackConfig, port: int) -> None:
    egress = rc.network_policy(eu_config.models[0])["spec"]["egress"]
    assert any(port in [p["port"] for p in rule["ports"]] for rule in egress), egress


def test_ingress_is_prometheus_on_the_metrics_port_only(eu_config: StackConfig) -> None:
    ingress = rc.network_policy(eu_config.models[0])["spec"]["ingress"]
    assert ingress == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "ports": [{"protocol": "TCP", "port": rc.METRICS_PORT}],
        }
    ], ingress


def test_the_controllers_command_line_is_one_the_cli_accepts(eu_config: StackConfig) -> None:
    """Every flag the Deployment passes exists, with a value the option takes: a renamed option would
    otherwise crash-loop the pod while every manifest test passes."""
    from servectl.experiment import controller_command

    model = next(m for m in eu_config.models if m.rollout is not None)
    assert model.rollout is not None
    guarded = replace(model.rollout, holdback_percent=5, guard_seconds=900, optional_metrics=("value",))
    with_guard = replace(model, rollout=guarded)
    args = rc.command(with_guard)
    assert args[:3] == ["servectl", "experiment", "controller"], args
    context = controller_command.make_context("controller", args[3:])
    assert (context.params["holdback_percent"], context.params["guard_seconds"]) == (5, 900), context.params
    assert context.params["optional_metric"] == ("value",), context.params
