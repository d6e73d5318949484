"""The policy pack's validation, called with a plan's resources as pulumi_policy would pass them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies.normalize import split_urn
from policies.opa import Endpoint
from policies.pack.gate import ResourceLike, plan_input, validate
from tests.policies.conftest import load_fixture


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
        by_urn[s["urn"]].dependencies = [by_urn[d] for d in s["dependencies"]]
    return [r for r in by_urn.values() if not r.resource_type.startswith("pulumi:providers:")]


def test_pack_input_matches_the_cli_input(tmp_path: Path) -> None:
    resources: Sequence[ResourceLike] = resources_of("uae-prod.infra.preview.json")
    (tmp_path / "Pulumi.uae-prod.yaml").write_text("config:\n  model-serving:jurisdiction: AE\n")
    doc = plan_input(resources, tmp_path)
    assert doc["jurisdiction"] == "AE"
    assert any(r["type"] == "pulumi:providers:aws" for r in doc["resources"]), "providers come along"


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
