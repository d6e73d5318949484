"""A mock resource monitor that records every registration the way the engine sees it.

Pulumi's `MockMonitor` hands `Mocks.new_resource` only a resource's type, name, inputs and provider; a
plan also
needs its parent, dependencies and property dependencies, so this monitor keeps the whole request.
"""

from dataclasses import dataclass, field
from typing import Any

from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.settings import get_project, get_stack

from stacks.preview.mocks import RealisticMocks

STACK_TYPE = "pulumi:pulumi:Stack"


@dataclass(frozen=True, kw_only=True)
class Registration:
    """One resource the program registered (or read), with what the engine would store for it."""

    op: str
    """`create` for a registered resource, `read` for `Resource.get`."""
    urn: str
    """The resource's URN."""
    type: str
    """Type token, e.g. `aws:s3/bucket:Bucket`."""
    name: str
    """Logical name."""
    custom: bool
    """False for components and the stack."""
    parent: str
    """Parent URN, empty for the stack."""
    provider: str
    """Provider reference `urn::id`, empty when none was given."""
    version: str
    """Plugin version the SDK asked for (providers record it among their inputs)."""
    inputs: dict[str, Any]
    """Inputs as the SDK serialised them (unknowns and secrets kept as the SDK sends them)."""
    dependencies: tuple[str, ...]
    """URNs of the resources it depends on."""
    property_dependencies: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per input property, the URNs it depends on."""
    resource_id: str = ""
    """The id a read looks up."""
    ignore_changes: tuple[str, ...] = ()
    """Input paths the engine would keep from the state on update (the `ignore_changes` option)."""


class RecordingMonitor(MockMonitor):
    """`MockMonitor` that records each request in order and builds URNs the way the engine does."""

    def __init__(self, mocks: RealisticMocks) -> None:
        super().__init__(mocks)
        self.realistic = mocks
        self.registrations: list[Registration] = []
        self.regions: dict[str, str] = {}
        """URN -> region, for every custom resource whose provider has one."""
        self.outputs: dict[str, Any] = {}
        """The stack's exports (what `pulumi stack output` would show)."""

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        # The engine leaves the stack's type out of its children's qualified types.
        if parent and parent.split("::")[2] != STACK_TYPE:
            type_ = parent.split("::")[2] + "$" + type_
        return "urn:pulumi:" + "::".join([get_stack(), get_project(), type_, name])

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        """Record, then answer as `MockMonitor` does."""
        record = self._record("create", request, request.object, request.custom)
        self.registrations.append(record)
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        self._locate(record, f"{record.urn}::{response.id}")
        return response

    def ReadResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        """Record a `Resource.get`, then answer as `MockMonitor` does."""
        self.registrations.append(self._record("read", request, request.properties, True, request.id))
        return super().ReadResource(request)  # type: ignore[no-untyped-call]

    def _locate(self, record: Registration, reference: str) -> None:
        """Remember the region of a provider (by reference) and of a custom resource (by URN)."""
        region: str | None
        if record.type == "pulumi:providers:aws":
            region = record.inputs.get("region")
        elif record.type.startswith("pulumi:providers:"):
            # A Kubernetes provider is as regional as the cluster its kubeconfig came from.
            region = next((self.regions[d] for d in record.dependencies if d in self.regions), None)
        else:
            region = self.realistic.provider_regions.get(record.provider)
        if region is None:
            return
        self.regions[record.urn] = region
        if record.type.startswith("pulumi:providers:"):
            self.realistic.provider_regions[reference] = region

    def _record(self, op: str, request: Any, props: Any, custom: bool, resource_id: str = "") -> Registration:
        return Registration(
            op=op,
            urn=self.make_urn(request.parent, request.type, request.name),
            type=request.type,
            name=request.name,
            custom=bool(custom),
            parent=request.parent,
            provider=request.provider,
            version=request.version,
            inputs=rpc.deserialize_properties(props, keep_unknowns=True, keep_internal=False),
            dependencies=tuple(request.dependencies) if hasattr(request, "dependencies") else (),
            property_dependencies={
                key: tuple(deps.urns) for key, deps in getattr(request, "propertyDependencies", {}).items()
            },
            resource_id=resource_id,
            ignore_changes=tuple(getattr(request, "ignoreChanges", ())),
        )
