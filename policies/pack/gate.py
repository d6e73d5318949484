"""The pack's validation, free of pulumi_policy so it can be tested with a plan's resources.

It turns the resources Pulumi hands a stack policy into the same normalized input that
`servectl policy check` sends, asks OPA for the gate's result and reports every unwaived
finding as a violation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from policies.normalize import RawResource, build_input, stack_file_jurisdiction
from policies.opa import Endpoint, Gate, local_server

ReportViolation = Callable[[str, str | None], None]


class ProviderLike(Protocol):
    """What the pack reads of pulumi_policy.PolicyProviderResource."""

    resource_type: str
    props: Mapping[str, Any]
    urn: str


class ResourceLike(Protocol):
    """What the pack reads of pulumi_policy.PolicyResource."""

    resource_type: str
    props: Mapping[str, Any]
    urn: str

    @property
    def provider(self) -> ProviderLike | None: ...

    @property
    def parent(self) -> ResourceLike | None: ...

    @property
    def dependencies(self) -> Sequence[ResourceLike]: ...


def raw_resources(resources: Iterable[ResourceLike]) -> list[RawResource]:
    """The resources, plus each provider not listed itself, as RawResources."""
    raws: dict[str, RawResource] = {}
    for r in resources:
        provider = r.provider
        if provider is not None and provider.urn not in raws:
            raws[provider.urn] = RawResource(
                urn=provider.urn, type=provider.resource_type, inputs=provider.props, outputs={}
            )
        raws[r.urn] = RawResource(
            urn=r.urn,
            type=r.resource_type,
            inputs=r.props,
            outputs={},
            provider=provider.urn if provider is not None else "",
            parent=r.parent.urn if r.parent is not None else "",
            dependencies=tuple(d.urn for d in r.dependencies),
        )
    return list(raws.values())


def plan_input(resources: Iterable[ResourceLike], project_dir: Path) -> dict[str, Any]:
    """The rules' input for the stack's resources, its jurisdiction from Pulumi.<stack>.yaml."""
    doc = build_input(raw_resources(resources), source="policy-pack")
    # The stack build_input found (it refuses resources of no stack or of several) names the file.
    doc["jurisdiction"] = stack_file_jurisdiction(project_dir, doc["stack"])
    return doc


def report(result: Mapping[str, Any], report_violation: ReportViolation) -> int:
    """Report each unwaived finding; return how many."""
    denied = [f for f in result["findings"] if not f["waived"]]
    for f in denied:
        report_violation(f"{f['id']} ({f['severity']}): {f['message']}. Fix: {f['remediation']}", f["urn"])
    return len(denied)


def validate(
    resources: Sequence[ResourceLike],
    report_violation: ReportViolation,
    *,
    project_dir: Path | None = None,
    opa_url: Endpoint | None = None,
) -> int:
    """Check the stack's resources through OPA (a local server unless opa_url); return the violations."""
    doc = plan_input(resources, project_dir or Path.cwd())
    if opa_url is not None:
        with Gate(opa_url) as gate:
            return report(gate.evaluate(doc), report_violation)
    with local_server() as endpoint, Gate(endpoint) as gate:
        return report(gate.evaluate(doc), report_violation)
