"""Fixtures for the policy gate tests: the real OPA binary and one server per module."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from policies.opa import DEFAULT_OPA, Endpoint, Gate, local_server
from stacks.preview.run import layers_of, stack_names

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]
STACKS = stack_names(REPO)
PLANS = [f"{s}.{layer}" for s in STACKS for layer in layers_of(s)]
"""Every shipped plan: `<stack>.<layer>`."""


@pytest.fixture(scope="session")
def opa_bin() -> Path:
    """The project's OPA; its absence is a failure, never a skip (`make setup` installs it)."""
    assert DEFAULT_OPA.is_file(), f"OPA is missing at {DEFAULT_OPA}: run `make setup`"
    return DEFAULT_OPA


@pytest.fixture(scope="module")
def opa_server(opa_bin: Path) -> Iterator[Endpoint]:
    """A real `opa run --server` with the policies, stopped after the module."""
    with local_server(opa_bin) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def gate(opa_server: Endpoint) -> Iterator[Gate]:
    """A client for the module's server."""
    with Gate(opa_server) as client:
        yield client


def load_fixture(name: str) -> dict[str, Any]:
    """A plan fixture as parsed JSON."""
    doc: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return doc


@pytest.fixture(scope="session")
def shipped_plan_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each shipped stack's layers' offline plan files, written once by `servectl plan` in a subprocess."""
    out = tmp_path_factory.mktemp("plans")
    files = {}
    for name in PLANS:
        stack, layer = name.split(".")
        path = out / f"{name}.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "servectl",
                "plan",
                "--stack",
                stack,
                "--layer",
                layer,
                "--out",
                str(path),
            ],
            cwd=REPO,
            check=True,
            capture_output=True,
            timeout=240,
        )
        files[name] = path
    return files


@pytest.fixture(scope="session")
def plans(shipped_plan_files: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Each shipped plan (`<stack>.<layer>`), parsed."""
    return {stack: json.loads(path.read_text()) for stack, path in shipped_plan_files.items()}
