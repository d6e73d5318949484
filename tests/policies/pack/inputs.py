"""The policy pack's OPA input against `servectl policy check`'s for the same plan.

The two differ in exactly these ways, each on purpose:

- ``source``: ``"preview"`` from the CLI, ``"policy-pack"`` from the pack; it says who built it.
- ``config``: the plan's stack config from the CLI, ``{}`` from the pack, which the engine hands
  no stack config (the jurisdiction comes from ``Pulumi.<stack>.yaml`` instead). The rules read
  config only to report a threshold a plan sets for itself (DOC-003), which no shipped stack does.
- the order of ``resources``: the pack lists a provider where a resource first uses it, the
  CLI in step order; the rules read the resources as a set.

Everything else is equal: stack, project, jurisdiction and every resource, field by field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.policies.conftest import FIXTURES

PREVIEW_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.preview.json"))
"""Every plan fixture, by file name."""


def write_stack_file(project_dir: Path, cli_input: dict[str, Any]) -> None:
    """The stack's Pulumi.<stack>.yaml with the jurisdiction the plan's config gives the CLI."""
    path = project_dir / f"Pulumi.{cli_input['stack']}.yaml"
    path.write_text(f"config:\n  {cli_input['project']}:jurisdiction: {cli_input['jurisdiction']}\n")


def assert_same_input(cli: dict[str, Any], pack: dict[str, Any]) -> None:
    """Fail unless pack equals cli but for the differences the module docstring lists."""
    assert (cli["source"], pack["source"]) == ("preview", "policy-pack"), (cli["source"], pack["source"])
    assert pack["config"] == {}, f"the pack was given a stack config: {pack['config']}"
    assert set(pack) == set(cli), f"top-level keys differ: {sorted(set(pack) ^ set(cli))}"
    for key in sorted(set(cli) - {"source", "config", "resources"}):
        assert pack[key] == cli[key], f"{key}: pack {pack[key]!r}, CLI {cli[key]!r}"
    cli_resources = {r["urn"]: r for r in cli["resources"]}
    pack_resources = {r["urn"]: r for r in pack["resources"]}
    assert len(cli_resources) == len(cli["resources"]) > 0, "the CLI input lists each resource once"
    assert len(pack_resources) == len(pack["resources"]), "the pack input lists each resource once"
    assert pack_resources.keys() == cli_resources.keys(), (
        f"only the pack: {sorted(pack_resources.keys() - cli_resources.keys())}; "
        f"only the CLI: {sorted(cli_resources.keys() - pack_resources.keys())}"
    )
    for urn, expected in cli_resources.items():
        assert pack_resources[urn] == expected, f"{urn}: pack {pack_resources[urn]}, CLI {expected}"
