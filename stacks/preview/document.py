"""Turns recorded registrations into the document `pulumi preview --json` writes (the engine's PreviewDigest).

Shape: `{"config", "steps": [{"op", "urn", "provider", "newState": {"urn", "custom", "type", "inputs",
"parent",
"dependencies", "provider", "propertyDependencies", ...}}], "duration", "changeSummary"}`. Provider
references are
`<provider urn>::<id>`; a resource that names no provider gets the engine's default provider for its package,
`pulumi:providers:<pkg>::default_<version>`, configured from the stack's `<pkg>:*` keys.
"""

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import pulumi
from pulumi.output import Unknown

from stacks.preview.mocks import UNKNOWN_ID
from stacks.preview.monitor import Registration

SECRET_SIG = "4dabf18193072939515e22adb298388d"  # noqa: S105 - the SDK's secret marker, not a secret


class DefaultProviderDisabledError(ValueError):
    """A resource names no provider while the stack disables default providers (the engine refuses it too)."""


def _asset(value: pulumi.AssetArchive | pulumi.FileAsset) -> dict[str, Any]:
    """As the engine prints an archive (a function's code): its assets by name, each by its path."""
    if isinstance(value, pulumi.FileAsset):
        return {"path": value.path}
    return {"assets": {name: _clean(asset) for name, asset in value.assets.items()}}


def _mapping(value: Mapping[Any, Any]) -> Any:
    if value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
        return "[secret]"
    return {str(k): _clean(v) for k, v in value.items()}


def _clean(value: Any) -> Any:
    """JSON values as the engine prints them: integral numbers as integers, secrets as `[secret]`."""
    if isinstance(value, Unknown):
        return UNKNOWN_ID
    if isinstance(value, pulumi.AssetArchive | pulumi.FileAsset):
        return _asset(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return _mapping(value)
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _state(reg: Registration, provider: str) -> dict[str, Any]:
    state: dict[str, Any] = {"urn": reg.urn, "custom": reg.custom, "type": reg.type}
    if reg.op == "read":
        state |= {"id": reg.resource_id, "external": True}
    inputs = _clean(reg.inputs)
    if reg.type.startswith("pulumi:providers:") and reg.version:
        inputs["version"] = reg.version
    if inputs:
        state["inputs"] = inputs
    if reg.parent:
        state["parent"] = reg.parent
    if reg.dependencies:
        state["dependencies"] = list(reg.dependencies)
    if provider:
        state["provider"] = provider
    deps = {k: list(v) for k, v in reg.property_dependencies.items() if v}
    if deps:
        state["propertyDependencies"] = deps
    return state


class _DefaultProviders:
    """Creates the engine's default provider for a package the first time a resource needs it."""

    def __init__(
        self, stack: str, project: str, config: Mapping[str, str], versions: Mapping[str, str]
    ) -> None:
        self.stack, self.project, self.config, self.versions = stack, project, config, versions
        self.refs: dict[str, str] = {}
        disabled = json.loads(config.get("pulumi:disable-default-providers", "[]"))
        self.disabled = set(disabled)

    def ref(self, reg: Registration, steps: list[dict[str, Any]]) -> str:
        package = reg.type.split(":", 1)[0]
        if package in self.refs:
            return self.refs[package]
        # The engine's builtin provider (StackReference) is not a plugin; disabling defaults leaves it be.
        if package != "pulumi" and ("*" in self.disabled or package in self.disabled):
            raise DefaultProviderDisabledError(
                f"{reg.urn} names no provider and default providers are disabled for {package}"
            )
        version = self.versions.get(package, "")
        default = f"default_{version.replace('.', '_')}"
        urn = f"urn:pulumi:{self.stack}::{self.project}::pulumi:providers:{package}::{default}"
        inputs = {
            k.split(":", 1)[1]: _config_value(v)
            for k, v in self.config.items()
            if k.startswith(f"{package}:")
        }
        if version:
            inputs["version"] = version
        steps.append(
            {
                "op": "create",
                "urn": urn,
                "newState": {
                    "urn": urn,
                    "custom": True,
                    "type": f"pulumi:providers:{package}",
                    "inputs": inputs,
                },
            }
        )
        self.refs[package] = f"{urn}::{UNKNOWN_ID}"
        return self.refs[package]


def _config_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def preview_document(
    registrations: Iterable[Registration],
    *,
    stack: str,
    project: str,
    config: Mapping[str, str],
    plugin_versions: Mapping[str, str],
    duration_ns: int,
) -> dict[str, Any]:
    """The preview digest for a fresh stack: every resource is a `create` (or a `read` for `Resource.get`)."""
    steps: list[dict[str, Any]] = []
    defaults = _DefaultProviders(stack, project, config, plugin_versions)
    for reg in registrations:
        provider = reg.provider
        if reg.custom and not provider and not reg.type.startswith("pulumi:providers:"):
            provider = defaults.ref(reg, steps)
        step: dict[str, Any] = {"op": reg.op, "urn": reg.urn}
        if provider:
            step["provider"] = provider
        step["newState"] = _state(reg, provider)
        steps.append(step)
    ops = Counter(step["op"] for step in steps)
    return {
        "config": dict(sorted(config.items())),
        "steps": steps,
        "duration": duration_ns,
        "changeSummary": dict(sorted(ops.items())),
    }
