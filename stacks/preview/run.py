"""Runs the real program for one stack under Pulumi's mocks and returns its preview document.

What the Pulumi CLI would do before running the program is done here: read `Pulumi.yaml` and the stack
file, hand
the program the stack's config (objects JSON-encoded, as the CLI passes them), then let the engine's part be
played by a recording mock monitor.
"""

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import resource as runtime_resource
from pulumi.runtime.proto import source_pb2
from pulumi.runtime.settings import reset_options
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from stacks.preview.document import preview_document
from stacks.preview.mocks import RealisticMocks
from stacks.preview.monitor import RecordingMonitor, Registration

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Plan:
    """The outcome of planning one stack."""

    stack: str
    document: dict[str, Any]
    registrations: list[Registration]
    regions: dict[str, str]
    """URN -> region of every regional resource."""


def project_name(root: Path = ROOT) -> str:
    """The project name from `Pulumi.yaml`."""
    project: dict[str, Any] = yaml.safe_load((root / "Pulumi.yaml").read_text())
    return str(project["name"])


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
    program: Callable[[], None], *, stack: str, project: str, config: dict[str, str]
) -> tuple[RecordingMonitor, int]:
    """Run `program` as the Pulumi runtime would, with `config`, against a fresh recording monitor."""
    # The SDK walks the Python stack for every resource to report source positions; a preview document carries
    # none, and skipping the walk halves the time of a plan.
    runtime_resource._get_stack_trace = source_pb2.StackTrace
    _ensure_event_loop()
    reset_options(project=project, stack=stack, preview=True)
    pulumi.runtime.set_all_config(config, [])
    mocks = RealisticMocks(default_region=config.get("aws:region"))
    monitor = RecordingMonitor(mocks)
    started = time.perf_counter_ns()
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=True, monitor=monitor)
    _sync_await(run_pulumi_func(program))
    return monitor, time.perf_counter_ns() - started


def _ensure_event_loop() -> None:
    """The SDK schedules its work on the thread's current loop; `asyncio.run` elsewhere may have unset it."""
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        loop = None
    if loop is None or loop.is_closed():
        asyncio.set_event_loop(asyncio.new_event_loop())


def plan_stack(stack: str, root: Path = ROOT) -> Plan:
    """Plan one stack: run `stacks.__main__.main` under mocks and build its preview document."""
    from stacks.__main__ import main

    project, config = project_name(root), stack_config(stack, root)
    monitor, duration = run_under_mocks(main, stack=stack, project=project, config=config)
    document = preview_document(
        monitor.registrations,
        stack=stack,
        project=project,
        config=config,
        plugin_versions=_plugin_versions(),
        duration_ns=duration,
    )
    return Plan(stack=stack, document=document, registrations=monitor.registrations, regions=monitor.regions)
