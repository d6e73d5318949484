"""What the document under review cannot do to the gate (issue 11, points 1 and 2 in part), through
`servectl policy check` and a real OPA: declare its own jurisdiction, raise its own threshold, name a
resource twice, relabel an object's kind; and an empty stack export is valid. Each mutation is made to a
clean shipped-shape plan, which passes unmutated."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from servectl.cli import cli
from tests.policies.conftest import FIXTURES

Document = dict[str, Any]
INFRA = json.loads((FIXTURES / "uae-prod.infra.preview.json").read_text())
PLATFORM = json.loads((FIXTURES / "uae-prod.platform.preview.json").read_text())


def check(document: Document, tmp_path: Path) -> tuple[int, list[str], str]:
    """Exit code, finding ids (denied or not) and output of the gate on `document`."""
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(document))
    result = CliRunner().invoke(cli, ["policy", "check", str(path), "--format", "json"])
    if result.exit_code == 2:
        return 2, [], result.output
    return result.exit_code, sorted(f["id"] for f in json.loads(result.stdout)["findings"]), result.output


def step(document: Document, name: str) -> Document:
    """The step of the resource named `name`."""
    found: Document = next(s for s in document["steps"] if s["urn"].endswith(f"::{name}"))
    return found


def declares_us(document: Document) -> None:
    document["config"]["model-serving:jurisdiction"] = "US"


def declares_us_and_moves_to_us_east_1(document: Document) -> None:
    declares_us(document)
    for s in document["steps"]:
        if s["newState"]["type"] == "pulumi:providers:aws":
            s["newState"]["inputs"]["region"] = "us-east-1"


def raises_its_canary_step(document: Document) -> None:
    document["config"]["model-serving:maxCanaryStep"] = "100"


def names_a_deployment_twice(document: Document) -> None:
    document["steps"].append(copy.deepcopy(step(document, "iris-v2")))


def names_a_provider_twice(document: Document) -> None:
    """The gate indexes providers by URN: a repeated one must be a finding, not a crash."""
    provider = next(s for s in document["steps"] if s["newState"]["type"].startswith("pulumi:providers:"))
    document["steps"].append(copy.deepcopy(provider))


def relabels_a_privileged_deployment(document: Document) -> None:
    inputs = step(document, "iris-v2")["newState"]["inputs"]
    inputs["kind"] = "ConfigMap"
    container = inputs["spec"]["template"]["spec"]["containers"][0]
    container.setdefault("securityContext", {})["privileged"] = True


MUTATIONS: dict[str, tuple[Document, Callable[[Document], None], set[str]]] = {
    "declares-another-jurisdiction": (PLATFORM, declares_us, {"RES-014"}),
    "declares-us-and-moves-there": (INFRA, declares_us_and_moves_to_us_east_1, {"RES-014", "RES-002"}),
    "raises-its-own-canary-step": (PLATFORM, raises_its_canary_step, {"DOC-003"}),
    "names-a-resource-twice": (PLATFORM, names_a_deployment_twice, {"DOC-001"}),
    "names-a-provider-twice": (INFRA, names_a_provider_twice, {"DOC-001"}),
    "relabels-a-privileged-deployment": (PLATFORM, relabels_a_privileged_deployment, {"DOC-002", "WL-003"}),
}


@pytest.mark.parametrize("plan", [INFRA, PLATFORM], ids=["infra", "platform"])
def test_the_unmutated_plans_pass(opa_bin: Path, tmp_path: Path, plan: Document) -> None:
    code, found, output = check(plan, tmp_path)
    assert (code, found) == (0, []), output


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_a_mutation_is_a_finding(opa_bin: Path, tmp_path: Path, name: str) -> None:
    plan, mutate, expected = MUTATIONS[name]
    document = copy.deepcopy(plan)
    mutate(document)
    code, found, output = check(document, tmp_path)
    assert code == 1 and expected <= set(found), (found, output[-2000:])
    if name != "declares-us-and-moves-there":
        assert set(found) == expected, f"only what the mutation did: {found}"


def test_a_relabelled_object_is_still_judged_as_what_it_is(opa_bin: Path, tmp_path: Path) -> None:
    document = copy.deepcopy(PLATFORM)
    step(document, "iris-v2")["newState"]["inputs"]["kind"] = "ConfigMap"
    code, found, _ = check(document, tmp_path)
    assert (code, found) == (1, ["DOC-002"]), "the relabel alone: reported, and nothing else hidden or added"


@pytest.mark.parametrize(
    "deployment",
    [
        {"manifest": {"time": "2026-12-01T00:00:00Z", "magic": "m", "version": "v3.274.1"}},
        {"manifest": {"time": "2026-12-01T00:00:00Z"}, "resources": []},
    ],
    ids=["resources-omitted", "resources-empty"],
)
def test_an_empty_stack_export_is_valid(opa_bin: Path, tmp_path: Path, deployment: Document) -> None:
    code, found, output = check({"version": 3, "deployment": deployment}, tmp_path)
    assert (code, found) == (0, []), output
    assert '"resources": 0' in output, output


def test_an_export_that_is_not_one_still_exits_2(opa_bin: Path, tmp_path: Path) -> None:
    code, _, output = check({"version": 3, "deployment": {}}, tmp_path)
    assert code == 2 and "deployment.resources" in output, output
