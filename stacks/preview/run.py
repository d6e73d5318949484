"""Runs the real program for one stack under Pulumi's mocks and returns its preview document.

What the Pulumi CLI would do before running the program is done here: read `Pulumi.yaml` and the stack
file, hand
the program the stack's config (objects JSON-encoded, as the CLI passes them), then let the engine's part be
played by a recording mock monitor.
"""

import asyncio
import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import resource as runtime_resource
from pulumi.runtime import rpc
from pulumi.runtime.proto import source_pb2
from pulumi.runtime.settings import get_root_resource, reset_options
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from stacks.preview.document import preview_document
from stacks.preview.mocks import ACCOUNT_ID, RealisticMocks
from stacks.preview.monitor import RecordingMonitor, Registration

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("infra", "platform")
"""The two Pulumi projects: `infra` (the top-level Pulumi.yaml) and `platform` (stacks/platform/)."""
_PROJECT_FILES = {"infra": Path("Pulumi.yaml"), "platform": Path("stacks/platform/Pulumi.yaml")}


@dataclass(frozen=True)
class Plan:
    """The outcome of planning one layer of one stack."""

    stack: str
    document: dict[str, Any]
    registrations: list[Registration]
    regions: dict[str, str]
    """URN -> region of every regional resource."""
    layer: str = "infra"
    """`infra` or `platform`."""
    outputs: dict[str, Any] | None = None
    """The layer's stack outputs."""


def project_name(root: Path = ROOT, layer: str = "infra") -> str:
    """The project name from the layer's `Pulumi.yaml`."""
    project: dict[str, Any] = yaml.safe_load((root / _PROJECT_FILES[layer]).read_text())
    return str(project["name"])


def layers_of(stack: str) -> tuple[str, ...]:
    """The layers a stack has: on-premises stacks have no infra layer (no AWS), smb stacks no platform
    layer (no cluster)."""
    if stack.startswith("smb-"):
        return ("infra",)
    return ("platform",) if stack.startswith("onprem-") else LAYERS


def stack_names(root: Path = ROOT) -> list[str]:
    """Every stack with a stack file."""
    return sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in root.glob("Pulumi.*.yaml"))


def stack_config(stack: str, root: Path = ROOT) -> dict[str, str]:
    """The stack file's config as the CLI hands it to a program: strings as they are, the rest as JSON."""
    path = root / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no stack file {path.name}; stacks: {', '.join(stack_names(root))}")
    raw: dict[str, Any] = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in raw.items()}


def _plugin_versions() -> dict[str, str]:
    import pulumi_aws._utilities as aws_utils
    import pulumi_kubernetes._utilities as k8s_utils

    return {
        "aws": aws_utils.get_version(),  # type: ignore[no-untyped-call]
        "kubernetes": k8s_utils.get_version(),  # type: ignore[no-untyped-call]
    }


def run_under_mocks(
    program: Callable[[], None],
    *,
    stack: str,
    project: str,
    config: dict[str, str],
    stack_outputs: dict[str, dict[str, Any]] | None = None,
) -> tuple[RecordingMonitor, int]:
    """Run `program` as the Pulumi runtime would, with `config`, against a fresh recording monitor."""
    # The SDK walks the Python stack for every resource to report source positions; a preview document carries
    # none, and skipping the walk halves the time of a plan.
    runtime_resource._get_stack_trace = source_pb2.StackTrace
    _ensure_event_loop()
    reset_options(project=project, stack=stack, preview=True)
    pulumi.runtime.set_all_config(config, [])
    # The deployer is signed in to the stack's own account (its stack file names it); ARNs carry it.
    account = config.get("model-serving:accountId", ACCOUNT_ID)
    mocks = RealisticMocks(
        default_region=config.get("aws:region"), stack_outputs=stack_outputs, account=account
    )
    monitor = RecordingMonitor(mocks)
    started = time.perf_counter_ns()
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=True, monitor=monitor)
    _sync_await(run_pulumi_func(program))
    monitor.outputs = _stack_outputs()
    return monitor, time.perf_counter_ns() - started


def _stack_outputs() -> dict[str, Any]:
    """The program's exports, resolved as the engine would store them (another layer's StackReference reads
    them). The mocks register the root stack before the program runs, so its exports are read here."""
    root = get_root_resource()
    if root is None:
        return {}
    struct = _sync_await(rpc.serialize_properties(dict(getattr(root, "outputs", {})), {}))
    outputs: dict[str, Any] = rpc.deserialize_properties(struct, keep_unknowns=False)
    return outputs


def _ensure_event_loop() -> None:
    """The SDK schedules its work on the thread's current loop; `asyncio.run` elsewhere may have unset it."""
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        loop = None
    if loop is None or loop.is_closed():
        asyncio.set_event_loop(asyncio.new_event_loop())


def _program(layer: str) -> Callable[[], None]:
    if layer == "infra":
        from stacks.infra.__main__ import main as infra_main

        return infra_main
    from stacks.platform.__main__ import main as platform_main

    return platform_main


_INFRA_OUTPUTS: dict[tuple[str, Path, str], dict[str, Any]] = {}


def _outputs_key(stack: str, root: Path) -> tuple[str, Path, str]:
    return stack, root, (root / f"Pulumi.{stack}.yaml").read_text()


def _infra_outputs(stack: str, root: Path) -> dict[str, Any]:
    """The infra layer's exports, planned once per process and stack file content: `plan --all` and the
    tests plan both layers, and the platform's StackReference needs only these."""
    key = _outputs_key(stack, root)
    if key not in _INFRA_OUTPUTS:
        plan_stack(stack, root, "infra")
    return _INFRA_OUTPUTS[key]


def plan_stack(stack: str, root: Path = ROOT, layer: str = "infra") -> Plan:
    """Plan one layer of a stack under mocks and build its preview document.

    The platform layer of an AWS stack reads the infra layer's outputs through a StackReference, so the infra
    layer is planned first and its exports answer the reference, as the engine answers it from the state.
    """
    if layer not in layers_of(stack):
        raise ValueError(f"stack {stack} has no {layer} layer (layers: {', '.join(layers_of(stack))})")
    references: dict[str, dict[str, Any]] = {}
    if layer == "platform" and "infra" in layers_of(stack):
        from stacks.contract import infra_stack_reference

        references[infra_stack_reference(stack)] = copy.deepcopy(_infra_outputs(stack, root))
    project, config = project_name(root, layer), stack_config(stack, root)
    monitor, duration = run_under_mocks(
        _program(layer), stack=stack, project=project, config=config, stack_outputs=references
    )
    document = preview_document(
        monitor.registrations,
        stack=stack,
        project=project,
        config=config,
        plugin_versions=_plugin_versions(),
        duration_ns=duration,
    )
    if layer == "infra":
        _INFRA_OUTPUTS[_outputs_key(stack, root)] = copy.deepcopy(monitor.outputs)
    return Plan(
        stack=stack,
        document=document,
        registrations=monitor.registrations,
        regions=monitor.regions,
        layer=layer,
        outputs=monitor.outputs,
    )
