"""The URNs a first, targeted `pulumi up` must name to create one ECR repository, and nothing else (smb.yml).

    python .github/scripts/registry_targets.py PLAN REPOSITORY

An smb stack's SageMaker Models reference the serving image in the stack's own ECR by digest, and CreateModel
fails on an image that is not there; but the repository is made by the same program, so on a fresh account
it cannot hold the image before `pulumi up`. The infra job therefore applies the repository first
(`pulumi up --target ...` with these URNs), pushes the image, then applies the rest. Pulumi refuses a
targeted create whose dependencies, parent or provider are neither in the state nor targeted, so the list is
the repository's closure under those three relations, read from the real `pulumi preview --json` (PLAN)
that the gate has just passed. REPOSITORY is the repository's name as the stack names it
(`<stack>/<model-serving:image.repository>`). Prints one URN a line, the repository's own first.
"""

import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REPOSITORY_TYPE = "aws:ecr/repository:Repository"


def states(plan: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each step's resource (its new state, or the old one for a delete) by URN."""
    found: dict[str, dict[str, Any]] = {}
    for step in plan.get("steps") or []:
        state = step.get("newState") or step.get("oldState") or {}
        if state.get("urn"):
            found[str(state["urn"])] = dict(state)
    return found


def provider_urn(reference: str) -> str:
    """A provider reference is `<urn>::<id>`; the URN is everything before the last `::`."""
    return reference.rsplit("::", 1)[0]


def repository_urn(resources: Mapping[str, Mapping[str, Any]], name: str) -> str:
    """The one ECR repository of the plan named `name`."""
    found = [
        urn
        for urn, state in resources.items()
        if state.get("type") == REPOSITORY_TYPE and (state.get("inputs") or {}).get("name") == name
    ]
    if len(found) != 1:
        named = sorted(
            str((s.get("inputs") or {}).get("name"))
            for s in resources.values()
            if s.get("type") == REPOSITORY_TYPE
        )
        raise SystemExit(f"the plan has {len(found)} ECR repositories named {name!r} (it has {named})")
    return found[0]


def needs(state: Mapping[str, Any]) -> Iterable[str]:
    """What a resource cannot be created without: its dependencies, its parent and its provider."""
    yield from state.get("dependencies") or []
    for names in (state.get("propertyDependencies") or {}).values():
        yield from names
    if state.get("parent"):
        yield str(state["parent"])
    if state.get("provider"):
        yield provider_urn(str(state["provider"]))


def closure(resources: Mapping[str, Mapping[str, Any]], start: str) -> list[str]:
    """`start` and everything it needs, transitively, in the order found (`start` first)."""
    order, pending = [start], [start]
    while pending:
        for urn in needs(resources[pending.pop()]):
            if urn not in resources:
                raise SystemExit(f"{start} needs {urn}, which the plan does not hold")
            if urn not in order:
                order.append(urn)
                pending.append(urn)
    return order


def main(argv: list[str]) -> None:
    """Print the targets."""
    if len(argv) != 2:
        raise SystemExit("usage: registry_targets.py PLAN REPOSITORY")
    resources = states(json.loads(Path(argv[0]).read_text()))
    print("\n".join(closure(resources, repository_urn(resources, argv[1]))))


if __name__ == "__main__":
    main(sys.argv[1:])
