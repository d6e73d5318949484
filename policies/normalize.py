"""Turn Pulumi plan documents into the one input shape the Rego rules read.

The rules see ``{"stack", "project", "source", "jurisdiction", "config", "resources",
"duplicate_urns"}``,
each resource ``{"urn", "type", "name", "provider", "parent", "dependencies",
"properties"}`` (and ``"id"`` when the document knows it: exports do, previews of new
resources do not) where ``provider`` is the provider's URN (its ``::id`` suffix dropped)
and ``properties`` are the resource's inputs over its outputs. The jurisdiction is the
plan's own claim: the rules take the stack's facts from the policy data, and a claim that
differs from them is a finding of its own (RES-014). ``duplicate_urns`` maps each URN the
document names more than once (a replacement's two steps aside) to how often: every copy is
checked, and the duplication is a finding (DOC-001). An empty stack export (a stack with
nothing deployed) is valid and has no resources.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

JsonObject = dict[str, Any]

# Steps that remove a resource describe nothing that will exist after the update.
_REMOVING_OPS = frozenset(
    {"delete", "delete-replaced", "discard", "discard-replaced", "remove-pending-replace"}
)
# A replacement's two steps that both carry the new state: one of these, and a `replace`.
_REPLACEMENT_OPS = frozenset({"create-replacement", "read-replacement", "import-replacement"})


class PlanError(ValueError):
    """A document that is not a readable Pulumi plan; the message names the file and the problem."""


@dataclass(frozen=True, kw_only=True)
class RawResource:
    """One resource as any source describes it, before normalization."""

    urn: str
    """The resource's URN, ``urn:pulumi:<stack>::<project>::<type>::<name>``."""
    type: str
    """The type token, e.g. ``aws:s3/bucket:Bucket``."""
    inputs: Mapping[str, Any]
    """The resource's input properties."""
    outputs: Mapping[str, Any]
    """The resource's output properties, when known."""
    provider: str = ""
    """The provider reference ``<provider urn>::<id>`` or the provider's URN."""
    parent: str = ""
    """The parent's URN."""
    dependencies: tuple[str, ...] = ()
    """URNs this resource depends on."""
    id: str = ""
    """The cloud's id of the resource (e.g. ``sg-...``), "" when not known yet."""


def split_urn(urn: str) -> tuple[str, str, str]:
    """Return (stack, project, name) of a URN, or raise ValueError."""
    if not urn.startswith("urn:pulumi:"):
        raise ValueError(f"not a Pulumi URN: {urn!r}")
    parts = urn[len("urn:pulumi:") :].split("::")
    if len(parts) < 4:
        raise ValueError(f"not a Pulumi URN: {urn!r}")
    return parts[0], parts[1], "::".join(parts[3:])


def provider_urn(reference: str) -> str:
    """Drop the ``::<id>`` of a provider reference, leaving the provider's URN."""
    parts = reference.split("::")
    # urn:pulumi:<stack>::<project>::pulumi:providers:<pkg>::<name>[::<id>]
    if len(parts) > 4 and parts[2].startswith("pulumi:providers:"):
        return "::".join(parts[:4])
    return reference


def normalize_resource(raw: RawResource) -> JsonObject:
    """One resource in the shape the rules read."""
    _, _, name = split_urn(raw.urn)
    resource: JsonObject = {
        "urn": raw.urn,
        "type": raw.type,
        "name": name,
        "provider": provider_urn(raw.provider),
        "parent": raw.parent,
        "dependencies": list(raw.dependencies),
        "properties": {**raw.outputs, **raw.inputs},
    }
    # Rules join resources through ids as well as URNs (a group named by id in a balancer).
    if raw.id:
        resource["id"] = raw.id
    return resource


def build_input(
    resources: Iterable[RawResource],
    *,
    source: str,
    config: Mapping[str, Any] | None = None,
    jurisdiction: str = "",
) -> JsonObject:
    """The rules' input for one stack's resources; raise ValueError if they name no single stack."""
    normalized = [normalize_resource(r) for r in resources]
    if not normalized:
        raise ValueError("it describes no resources")
    counts = Counter(r["urn"] for r in normalized)
    stacks = {split_urn(r["urn"])[:2] for r in normalized}
    if len(stacks) != 1:
        raise ValueError(f"its resources belong to {len(stacks)} stacks: {sorted(s for s, _ in stacks)}")
    ((stack, project),) = stacks
    flat_config = {str(k): v for k, v in (config or {}).items()}
    return {
        "stack": stack,
        "project": project,
        "source": source,
        "jurisdiction": jurisdiction or config_jurisdiction(flat_config),
        "config": flat_config,
        "resources": normalized,
        "duplicate_urns": {urn: n for urn, n in counts.items() if n > 1},
    }


def empty_export() -> JsonObject:
    """The rules' input for a stack export with no resources: nothing deployed, nothing to check."""
    return {
        "stack": "",
        "project": "",
        "source": "export",
        "jurisdiction": "",
        "config": {},
        "resources": [],
        "duplicate_urns": {},
    }


def config_jurisdiction(config: Mapping[str, Any]) -> str:
    """The value of the first ``<project>:jurisdiction`` config key, or ""."""
    for key, value in config.items():
        if key.endswith(":jurisdiction") and isinstance(value, str):
            return value
    return ""


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} is a {type(value).__name__}, not an object")
    return value


def _raw_from_state(state: Mapping[str, Any], where: str) -> RawResource:
    urn, type_ = state.get("urn"), state.get("type")
    if not isinstance(urn, str) or not isinstance(type_, str):
        raise ValueError(f"{where} has no string `urn` and `type`")
    dependencies = state.get("dependencies") or []
    if not isinstance(dependencies, list):
        raise ValueError(f"{where}.dependencies is not a list")
    return RawResource(
        urn=urn,
        type=type_,
        inputs=_mapping(state.get("inputs"), f"{where}.inputs"),
        outputs=_mapping(state.get("outputs"), f"{where}.outputs"),
        provider=str(state.get("provider") or ""),
        parent=str(state.get("parent") or ""),
        dependencies=tuple(str(d) for d in dependencies),
        id=state["id"] if isinstance(state.get("id"), str) else "",
    )


def from_preview(doc: Mapping[str, Any]) -> JsonObject:
    """The rules' input for a ``pulumi preview --json`` document."""
    steps = doc["steps"]
    if not isinstance(steps, list):
        raise ValueError("`steps` is not a list")
    raws: list[RawResource] = []
    position: dict[str, tuple[int, str]] = {}  # URN -> index in raws, op of that step
    for i, step in enumerate(steps):
        if not isinstance(step, Mapping):
            raise ValueError(f"steps[{i}] is not an object")
        if step.get("op") in _REMOVING_OPS or step.get("newState") is None:
            continue
        state = _mapping(step["newState"], f"steps[{i}].newState")
        raw = _raw_from_state(state, f"steps[{i}].newState")
        if not raw.provider and isinstance(step.get("provider"), str):
            raw = replace(raw, provider=step["provider"])
        # Two steps of one resource that the engine writes: a replacement's (create-replacement and
        # replace, with --show-replacement-steps), and a refresh followed by the step it leads to
        # (preview --refresh). It is one resource, checked once, as its last step has it. Any other
        # repetition is kept, every copy checked, and reported (DOC-001).
        op = str(step.get("op", ""))
        if raw.urn in position and _one_resource(op, position[raw.urn][1]):
            index = position[raw.urn][0]
            raws[index], position[raw.urn] = raw, (index, op)
            continue
        position[raw.urn] = (len(raws), op)
        raws.append(raw)
    return build_input(raws, source="preview", config=_mapping(doc.get("config"), "`config`"))


def _one_resource(op: str, earlier: str) -> bool:
    """Whether two steps of one URN are the engine's for one resource: a replacement's (in either
    order), or a refresh and the step after it."""
    replacement = "replace" in (op, earlier) and bool({op, earlier} & _REPLACEMENT_OPS)
    return replacement or earlier == "refresh"


def from_export(doc: Mapping[str, Any]) -> JsonObject:
    """The rules' input for a ``pulumi stack export`` document."""
    deployment = _mapping(doc["deployment"], "`deployment`")
    resources = deployment.get("resources")
    if resources is None and isinstance(deployment.get("manifest"), Mapping):
        # The engine omits an empty resource list: a stack that has nothing deployed.
        resources = []
    if not isinstance(resources, list):
        raise ValueError("`deployment.resources` is not a list")
    raws = []
    for i, state in enumerate(resources):
        if not isinstance(state, Mapping):
            raise ValueError(f"deployment.resources[{i}] is not an object")
        if state.get("delete"):
            continue
        raws.append(_raw_from_state(state, f"deployment.resources[{i}]"))
    return build_input(raws, source="export") if raws else empty_export()


def from_document(doc: Any) -> JsonObject:
    """The rules' input for a parsed plan document of either kind; raise ValueError if it is neither."""
    if isinstance(doc, Mapping) and "steps" in doc:
        return from_preview(doc)
    if isinstance(doc, Mapping) and isinstance(doc.get("deployment"), Mapping):
        return from_export(doc)
    raise ValueError(
        "it is neither a `pulumi preview --json` document (no `steps`) "
        "nor a `pulumi stack export` document (no `deployment.resources`)"
    )


# `  <project>:jurisdiction: AE` under `config:`; read with the standard library so that the
# policy pack's own virtualenv needs no YAML parser for it.
_JURISDICTION_LINE = re.compile(
    r"""^\s+[\w.-]+:jurisdiction:\s*["']?([A-Za-z]+)["']?\s*(?:#.*)?$""", re.MULTILINE
)


def stack_file_jurisdiction(project_dir: Path, stack: str) -> str:
    """The ``<project>:jurisdiction`` in ``Pulumi.<stack>.yaml`` of project_dir, or "" if there is none."""
    path = project_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        return ""
    match = _JURISDICTION_LINE.search(path.read_text(encoding="utf-8"))
    return match.group(1) if match else ""


def load_plan(path: Path, project_dir: Path | None = None) -> JsonObject:
    """Read and normalize one plan file; raise PlanError naming the file and the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise PlanError(f"{path}: cannot read it: {err.strerror or err}") from err
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise PlanError(f"{path}: not JSON: {err.msg} at line {err.lineno}, column {err.colno}") from err
    try:
        normalized = from_document(doc)
    except (KeyError, ValueError, TypeError) as err:
        raise PlanError(f"{path}: not a Pulumi plan: {err}") from err
    if not normalized["jurisdiction"] and project_dir is not None:
        normalized["jurisdiction"] = stack_file_jurisdiction(project_dir, normalized["stack"])
    return normalized
