"""The URNs a first, targeted `pulumi up` must name to create one ECR repository and the model bucket, and
nothing else (smb.yml).

    python .github/scripts/registry_targets.py PLAN REPOSITORY

An smb stack's SageMaker Models reference the serving image in the stack's own ECR by digest, and CreateModel
fails on an image that is not there; but the repository is made by the same program, so on a fresh account
it cannot hold the image before `pulumi up`. The infra job therefore applies the repository first
(`pulumi up --target ...` with these URNs), pushes the image, then applies the rest. Pulumi refuses a
targeted create whose dependencies, parent or provider are neither in the state nor targeted, so the list is
the repository's closure under those three relations, read from the real `pulumi preview --json` (PLAN)
that the gate has just passed. REPOSITORY is the repository's name as the stack names it
(`<stack>/<model-serving:image.repository>`). Prints one URN a line, the repository's own first.

The Models read their versions from the model bucket as well (its data URL), and that bucket is made by the
same program too: so the first `up` also creates the bucket every Model's data URL points into, its
settings (the SSE-KMS default under the store's key, the TLS-only policy, the public access block,
versioning, ownership, lifecycle: every `aws:s3/...` resource that depends on it, so no object lands in a
bucket without them) and their closures (the key). `servectl publish` fills it before the full `up`
(model_versions.py lists what to publish). A plan whose Models name no bucket, or an unknown one, stops here.
"""

import json
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REPOSITORY_TYPE = "aws:ecr/repository:Repository"
BUCKET_TYPE = "aws:s3/bucket:Bucket"
MODEL_TYPE = "aws:sagemaker/model:Model"
DATA_URL = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.+)$")
"""A Model's data URL: `s3://<bucket>/<prefix>` (an unknown value in a preview does not match)."""


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


def data_url(state: Mapping[str, Any]) -> tuple[str, str]:
    """(bucket, prefix) of a Model's one S3 data source; SystemExit naming the Model when it has none."""
    container = (state.get("inputs") or {}).get("primaryContainer") or {}
    sources = (container.get("modelDataSource") or {}).get("s3DataSources") or []
    found = DATA_URL.match(str(sources[0].get("s3Uri", ""))) if len(sources) == 1 else None
    if found is None:
        raise SystemExit(
            f"{state.get('urn')}: no known s3://<bucket>/<prefix> data URL in the plan ({sources})"
        )
    return found.group(1), found.group(2)


def model_bucket_urns(resources: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The buckets the plan's Models read their versions from (one per region's store), each exactly once."""
    names = sorted({data_url(s)[0] for s in resources.values() if s.get("type") == MODEL_TYPE})
    if not names:
        raise SystemExit("the plan has no SageMaker Model, so no model bucket to create first")
    urns = []
    for name in names:
        found = [
            urn
            for urn, state in resources.items()
            if state.get("type") == BUCKET_TYPE and (state.get("inputs") or {}).get("bucket") == name
        ]
        if len(found) != 1:
            raise SystemExit(
                f"the Models read s3://{name}, but the plan has {len(found)} buckets of that name"
            )
        urns.append(found[0])
    return urns


def bucket_settings(resources: Mapping[str, Mapping[str, Any]], bucket: str) -> list[str]:
    """The bucket's own settings: every S3 resource (other than a bucket) that depends on it."""
    return [
        urn
        for urn, state in resources.items()
        if str(state.get("type", "")).startswith("aws:s3/")
        and state.get("type") != BUCKET_TYPE
        and bucket in list(needs(state))
    ]


def targets(resources: Mapping[str, Mapping[str, Any]], repository: str) -> list[str]:
    """The repository's closure, then each model bucket's and its settings', without repeats."""
    order = closure(resources, repository_urn(resources, repository))
    for bucket in model_bucket_urns(resources):
        for start in (bucket, *bucket_settings(resources, bucket)):
            order += [urn for urn in closure(resources, start) if urn not in order]
    return order


def main(argv: list[str]) -> None:
    """Print the targets."""
    if len(argv) != 2:
        raise SystemExit("usage: registry_targets.py PLAN REPOSITORY")
    resources = states(json.loads(Path(argv[0]).read_text()))
    print("\n".join(targets(resources, argv[1])))


if __name__ == "__main__":
    main(sys.argv[1:])
