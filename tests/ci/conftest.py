"""Helpers for the workflow tests: the workflow files as data, and their steps' scripts run as processes."""

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.crane import CRANE, serve_registry

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
BASH = ["bash", "--noprofile", "--norc", "-eo", "pipefail"]
"""How GitHub runs a `run:` script with the default shell."""


def workflow(name: str) -> dict[str, Any]:
    """A workflow file, with PyYAML's boolean `on` key restored."""
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    if True in data:
        data["on"] = data.pop(True)
    return dict(data)


def step_named(job: dict[str, Any], name: str) -> dict[str, Any]:
    """The one step of a job with that name."""
    found = [s for s in job["steps"] if s.get("name") == name]
    assert len(found) == 1, f"expected one step named {name!r}, found {len(found)}"
    return dict(found[0])


def runs(job: dict[str, Any]) -> list[tuple[str, str]]:
    """(working directory, script) of each `run:` step, in order."""
    return [(s.get("working-directory", "."), s["run"]) for s in job["steps"] if "run" in s]


def plain_env(name: str) -> dict[str, str]:
    """A workflow's workflow-level variables that are plain values (no expressions), as a job sees them."""
    return {k: str(v) for k, v in workflow(name)["env"].items() if "${{" not in str(v)}


def run_script(
    step: dict[str, Any], cwd: Path, env: dict[str, str], shell: list[str] | None = None
) -> tuple[int, dict[str, str], str]:
    """Run a step's script for real (with this Python unless `shell` is given, e.g. BASH); returns the
    exit code, the GITHUB_OUTPUT entries, and stdout and stderr together."""
    script = cwd / "step.script"
    script.write_text(step["run"])
    outputs = cwd / "github_output"
    outputs.write_text("")
    result = subprocess.run(
        [*(shell or [sys.executable]), str(script)],
        check=False,
        cwd=cwd,
        env={**os.environ, **env, "GITHUB_OUTPUT": str(outputs)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    pairs = (line.split("=", 1) for line in outputs.read_text().splitlines() if line)
    return result.returncode, dict(pairs), result.stdout + result.stderr


def executable(path: Path, text: str) -> None:
    """Write a script and make it executable (a stand-in for a tool on PATH)."""
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def registry() -> Iterator[str]:
    """A crane in-memory registry on loopback, playing a region's ECR."""
    yield from serve_registry(CRANE, lifetime_seconds=300)
