"""The admission objects (stacks/manifests/admission.py): what they match, which namespaces they bind to,
that each refusal carries the gate's rule id, and that a registry that could break the expression is
refused before it reaches one. Whether the CEL does what it says is for the real API server
(test_admission_kube.py): no evaluator here would prove what the server runs."""

import json
import re
from pathlib import Path
from typing import Any

import pytest

from stacks.manifests import admission, tenancy
from stacks.settings import StackConfig
from tests.stacks.schemas import validate

REGISTRY = "345678901234.dkr.ecr.eu-central-1.amazonaws.com/eu-prod"
PODS_REGO = Path(__file__).resolve().parents[3] / "policies" / "workloads" / "pods.rego"


def _rego_ids() -> dict[str, str]:
    """Rule id -> title, from each rule's METADATA in pods.rego."""
    text = PODS_REGO.read_text()
    blocks = re.findall(r"# title: (.+)\n(?:#.*\n)*?#   id: (WL-\d{3})", text)
    return {rule_id: title for title, rule_id in blocks}


def _policies() -> list[dict[str, Any]]:
    return [admission.policy(shape, REGISTRY) for shape in admission.SHAPES]


@pytest.mark.parametrize("shape", admission.SHAPES, ids=lambda s: s.name)
def test_the_policy_and_binding_validate(shape: admission.Shape) -> None:
    validate(admission.policy(shape, REGISTRY))
    validate(admission.binding(shape))


def test_every_refusal_id_is_a_rule_of_the_gate() -> None:
    ids = _rego_ids()
    assert len(ids) == 12, f"pods.rego's rules as parsed: {ids}"
    assert set(admission.rule_ids()) == {"WL-001", "WL-003", "WL-007", "WL-008", "WL-009"}
    missing = set(admission.rule_ids()) - set(ids)
    assert not missing, f"ids the policy refuses with that pods.rego does not define: {missing}"
    assert ids["WL-009"] == "No host namespaces", ids


@pytest.mark.parametrize("shape", admission.SHAPES, ids=lambda s: s.name)
def test_each_validation_names_its_rule_id_in_both_messages(shape: admission.Shape) -> None:
    validations = admission.policy(shape, REGISTRY)["spec"]["validations"]
    assert len(validations) == len(admission.rule_ids()), validations
    for validation, rule_id in zip(validations, admission.rule_ids(), strict=True):
        assert validation["message"].startswith(f"{rule_id}: "), validation
        assert validation["messageExpression"].startswith(json.dumps(f"{rule_id}: ")), validation
        assert validation["reason"] == "Forbidden", validation


def test_the_policies_match_pods_and_every_pod_template_on_create_and_update() -> None:
    matched = {
        (group, resource)
        for p in _policies()
        for rule in p["spec"]["matchConstraints"]["resourceRules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        if rule["operations"] == ["CREATE", "UPDATE"]
    }
    assert matched == {
        ("", "pods"), ("", "pods/ephemeralcontainers"),
        ("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"), ("apps", "daemonsets"),
        ("batch", "jobs"), ("batch", "cronjobs"),
    }, matched  # fmt: skip


@pytest.mark.parametrize(
    ("shape", "path"),
    [(admission.SHAPES[0], "object.spec"), (admission.SHAPES[1], "object.spec.template.spec"),
     (admission.SHAPES[2], "object.spec.jobTemplate.spec.template.spec")],
    ids=["pods", "templates", "cronjobs"],
)  # fmt: skip
def test_each_shape_reads_its_containers_where_its_kinds_keep_them(shape: admission.Shape, path: str) -> None:
    variables = {v["name"]: v["expression"] for v in admission.policy(shape, REGISTRY)["spec"]["variables"]}
    assert variables["containers"] == f"{path}.?initContainers.orValue([]) + {path}.containers", variables
    assert variables["ephemeral"] == f"{path}.?ephemeralContainers.orValue([])", variables


def test_an_expression_that_cannot_be_evaluated_refuses() -> None:
    assert {p["spec"]["failurePolicy"] for p in _policies()} == {"Fail"}


def test_the_binding_selects_the_tenant_namespaces_and_refuses(eu_config: StackConfig) -> None:
    binding = admission.binding(admission.SHAPES[0])
    assert binding["spec"]["validationActions"] == ["Deny"], binding
    assert binding["spec"]["policyName"] == admission.policy_metadata(admission.SHAPES[0])["name"]
    (expression,) = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
    assert expression == {"key": tenancy.TENANT_LABEL, "operator": "Exists"}, expression
    labels = tenancy.namespace(eu_config.tenants[0])["metadata"]["labels"]
    assert labels[tenancy.TENANT_LABEL] == eu_config.tenants[0].name, (
        f"the label the binding selects: {labels}"
    )


def test_the_registry_is_one_cel_string_literal() -> None:
    variables = admission.policy(admission.SHAPES[0], "registry.dc1.example.ae:5000/mirror")["spec"][
        "variables"
    ]
    assert variables[0] == {"name": "registry", "expression": '"registry.dc1.example.ae:5000/mirror"'}


@pytest.mark.parametrize(
    "registry",
    ["", "Registry.example.com", "registry.example.com/", "https://registry.example.com",
     "registry.example.com/x' || true || '", "registry.example.com/a b", "-registry.example.com"],
)  # fmt: skip
def test_a_registry_that_is_not_a_location_is_refused_with_its_value(registry: str) -> None:
    with pytest.raises(
        ValueError, match=rf"admission: registry {re.escape(repr(registry))} is not a registry"
    ):
        admission.policy(admission.SHAPES[0], registry)


@pytest.mark.parametrize(
    "registry", [REGISTRY, "registry.dc1.example.ae", "registry.dc1.example.ae:5000", "127.0.0.1:5000/a/b_c"]
)
def test_a_registry_location_is_accepted(registry: str) -> None:
    assert admission.check_registry(registry) == registry
