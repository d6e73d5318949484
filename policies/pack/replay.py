"""Replay a plan through the policy pack without the Pulumi engine.

``.tools/policy-pack-venv/bin/python -m policies.pack.replay PLAN.json [--project-dir DIR]``
builds the ``pulumi_policy`` resource objects the engine would hand the pack's stack policy
(providers, parents and dependencies linked), runs the pack's validation on them and prints
one JSON line per violation. Exit 1 on any violation, 2 on an unreadable plan, else 0.
With ``--input`` it prints the input document the pack would send to OPA instead, for
comparison with the one `servectl policy check` sends. Runs in the pack's virtualenv, which
has pulumi-policy.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pulumi_policy import PolicyCustomTimeouts, PolicyProviderResource, PolicyResource, PolicyResourceOptions

from policies.normalize import PlanError, provider_urn, split_urn
from policies.pack.gate import plan_input, validate


def _states(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    steps = doc.get("steps")
    if not isinstance(steps, list):
        raise PlanError("not a `pulumi preview --json` document (no `steps`)")
    return [
        s["newState"] for s in steps if s.get("newState") and s.get("op") not in {"delete", "delete-replaced"}
    ]


def _options(parent: str) -> Any:
    timeouts = PolicyCustomTimeouts(0.0, 0.0, 0.0)
    return PolicyResourceOptions(False, [], None, [], timeouts, [], parent or None)


def policy_resources(doc: Mapping[str, Any]) -> list[Any]:
    """The stack's resources as pulumi_policy.PolicyResource objects, linked like the engine links them."""
    states = _states(doc)
    providers = {
        s["urn"]: PolicyProviderResource(s["type"], s.get("inputs", {}), s["urn"], split_urn(s["urn"])[2])
        for s in states
        if s["type"].startswith("pulumi:providers:")
    }
    resources = {
        s["urn"]: PolicyResource(
            resource_type=s["type"],
            props=s.get("inputs", {}),
            urn=s["urn"],
            name=split_urn(s["urn"])[2],
            opts=_options(s.get("parent", "")),
            provider=providers.get(provider_urn(s.get("provider", ""))),
            parent=None,
            dependencies=[],
            property_dependencies={},
        )
        for s in states
    }
    for s in states:
        r = resources[s["urn"]]
        r.parent = resources.get(s.get("parent", ""))
        r.dependencies = [resources[d] for d in s.get("dependencies", []) if d in resources]
    return list(resources.values())


def main(argv: list[str] | None = None) -> int:
    """Replay one plan file; print violations as JSON lines."""
    parser = argparse.ArgumentParser(prog="python -m policies.pack.replay", description=__doc__)
    parser.add_argument("plan", type=Path)
    parser.add_argument("--project-dir", type=Path, default=Path.cwd())
    parser.add_argument("--input", action="store_true", help="Print the pack's OPA input; do not validate.")
    args = parser.parse_args(argv)
    try:
        resources = policy_resources(json.loads(args.plan.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {args.plan}: {err}", file=sys.stderr)
        return 2
    if args.input:
        print(json.dumps(plan_input(resources, args.project_dir)))
        return 0
    violations: list[dict[str, str | None]] = []
    validate(
        resources,
        lambda message, urn: violations.append({"message": message, "urn": urn}),
        project_dir=args.project_dir,
    )
    for v in violations:
        print(json.dumps(v))
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
