"""The policy pack's validation, called with a plan's resources as pulumi_policy would pass them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from policies.normalize import load_plan, split_urn
from policies.opa import Endpoint
from policies.pack.gate import ResourceLike, plan_input, validate
from tests.policies.conftest import FIXTURES, load_fixture
from tests.policies.pack.inputs import PREVIEW_FIXTURES, assert_same_input, write_stack_file


@dataclass
class Provider:
    """Stands in for pulumi_policy.PolicyProviderResource."""

    resource_type: str
    props: Mapping[str, Any]
    urn: str
    name: str


@dataclass
class Resource:
    """Stands in for pulumi_policy.PolicyResource (the fields the pack reads)."""

    resource_type: str
    props: Mapping[str, Any]
    urn: str
    name: str
    provider: Provider | None = None
    parent: Resource | None = None
    dependencies: list[Resource] = field(default_factory=list)


def resources_of(fixture: str) -> list[Resource]:
    """The resources of a plan fixture, linked the way the Pulumi engine links them."""
    states = [s["newState"] for s in load_fixture(fixture)["steps"]]
    by_urn: dict[str, Resource] = {}
    providers = {
        s["urn"]: Provider(s["type"], s["inputs"], s["urn"], split_urn(s["urn"])[2])
        for s in states
        if s["type"].startswith("pulumi:providers:")
    }
    for s in states:
        ref = s["provider"].rpartition("::")[0] if s["provider"] else ""
        by_urn[s["urn"]] = Resource(
            s["type"], s["inputs"], s["urn"], split_urn(s["urn"])[2], providers.get(ref)
        )
    for s in states:
        by_urn[s["urn"]].parent = by_urn.get(s["parent"])
        by_urn[s["urn"]].dependencies = [by_urn[d] for d in s["dependencies"]]
    return list(by_urn.values())


@pytest.mark.parametrize("fixture", PREVIEW_FIXTURES)
def test_pack_input_matches_the_cli_input(fixture: str, tmp_path: Path) -> None:
    cli = load_plan(FIXTURES / fixture)
    write_stack_file(tmp_path, cli)
    resources: Sequence[ResourceLike] = resources_of(fixture)
    assert_same_input(cli, plan_input(resources, tmp_path))


def test_pack_adds_a_provider_it_is_not_given() -> None:
    # A provider known only from a resource's reference: its type and inputs, nothing else.
    resources = resources_of("uae-prod.infra.preview.json")
    (provider,) = (r for r in resources if r.urn.endswith("::pulumi:providers:aws::default_7_0_0"))
    listed = [r for r in resources if r is not provider]
    assert any(r.provider is not None and r.provider.urn == provider.urn for r in listed), "it is in use"
    added = [r for r in plan_input(listed, Path("."))["resources"] if r["urn"] == provider.urn]
    assert added == [
        {
            "urn": provider.urn,
            "type": "pulumi:providers:aws",
            "name": "default_7_0_0",
            "provider": "",
            "parent": "",
            "dependencies": [],
            "properties": {"region": "me-central-1", "version": "7.0.0"},
        }
    ], added


def test_pack_passes_a_clean_stack(opa_server: Endpoint, tmp_path: Path) -> None:
    (tmp_path / "Pulumi.uae-prod.yaml").write_text("config:\n  model-serving:jurisdiction: AE\n")
    violations: list[tuple[str, str | None]] = []
    count = validate(
        resources_of("uae-prod.infra.preview.json"),
        lambda m, u: violations.append((m, u)),
        project_dir=tmp_path,
        opa_url=opa_server,
    )
    assert (count, violations) == (0, [])


def test_pack_reports_each_unwaived_finding(tmp_path: Path) -> None:
    violations: list[tuple[str, str | None]] = []
    count = validate(
        resources_of("bad-uae-prod-insecure-cluster.preview.json"),
        lambda m, u: violations.append((m, u)),
        project_dir=tmp_path,
    )
    assert count == 5
    assert sorted(m.split(" ")[0] for m, _ in violations) == [
        "AUD-001",
        "AUD-003",
        "ENC-003",
        "ENC-004",
        "NET-001",
    ]
    assert all(u and u.startswith("urn:pulumi:uae-prod::") for _, u in violations)
