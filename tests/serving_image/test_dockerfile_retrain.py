"""The Dockerfile's `retrain` target, the retrain receiver's image, checked without a container engine: its
shape (a stage apart from the default target, non-root, the `retrain` extra), and that the packages of that
extra are enough to start `servectl retrain` and `servectl retrain-receiver` (a process that may import
nothing outside them)."""

import json
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata

import pytest
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement

from tests.serving_image.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "serving_image" / "Dockerfile"
PROJECT = "model-serving"
OWN_PACKAGES = {"servectl", "serving_image", "stacks", "policies", "loadtests", "benchmarks"}


def stages() -> dict[str, list[dict[str, str]]]:
    """Each stage's instructions by its name (`FROM ... AS name`)."""
    parser = DockerfileParser(path=str(DOCKERFILE))
    found: dict[str, list[dict[str, str]]] = {}
    current: list[dict[str, str]] = []
    for item in parser.structure:
        if item["instruction"] == "FROM":
            current = [item]
            found[item["value"].split()[-1]] = current
        else:
            current.append(item)
    return found


def values(stage: list[dict[str, str]], instruction: str) -> list[str]:
    return [item["value"] for item in stage if item["instruction"] == instruction]


def test_the_default_target_is_still_the_serving_image() -> None:
    names = list(stages())
    assert names[-1] == "runtime", f"`docker build` without --target builds the last stage: {names}"
    assert "retrain" in names and names.index("retrain") < len(names) - 1, names
    assert values(stages()["runtime"], "CMD") == ['["python", "-m", "serving_image"]'], (
        "serving CMD unchanged"
    )


def test_the_retrain_target_carries_the_retrain_extra_as_a_non_root_user() -> None:
    found = stages()
    retrain, env = found["retrain"], found["retrain-env"]
    assert values(retrain, "FROM") == ["${PYTHON_IMAGE} AS retrain"], "the slim base, not the build stage"
    installs = " ".join(values(env, "RUN"))
    assert "-c constraints.txt '.[retrain]'" in installs, f"pinned by constraints.txt: {installs}"
    copied = values(retrain, "COPY")
    assert "--from=retrain-env /opt/retrain /opt/retrain" in copied, copied
    assert not any("/opt/build" in c or "/opt/venv" in c for c in copied), f"one environment only: {copied}"
    assert values(retrain, "USER") == ["10001:10001"], "the serving image's non-root user (RUN_AS_USER)"
    assert any("PATH=/opt/retrain/bin:$PATH" in e for e in values(retrain, "ENV")), values(retrain, "ENV")
    assert values(retrain, "CMD") == ['["servectl", "retrain-receiver", "--help"]'], values(retrain, "CMD")


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", requirement).lower()


def extra_closure(extra: str) -> set[str]:
    """Normalised names of the distributions pip installs for `.[extra]`: pyproject's core dependencies and
    the extra (its self-references expanded), then each installed distribution's own requirements."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pending = [Requirement(r) for r in project["dependencies"]]
    extras, wanted = {extra}, [extra]
    while wanted:
        for raw in project["optional-dependencies"][wanted.pop()]:
            req = Requirement(raw)
            if _name(req.name) == PROJECT:
                wanted += [e for e in req.extras if e not in extras]
                extras |= req.extras
            else:
                pending.append(req)
    seen: set[str] = set()
    while pending:
        req = pending.pop()
        if _name(req.name) in seen:
            continue
        seen.add(_name(req.name))
        for raw in metadata.distribution(req.name).requires or []:
            sub = Requirement(raw)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in {"", *req.extras}):
                pending.append(sub)
    return seen


def missing_modules(extra: str) -> set[str]:
    """Top-level modules installed here (the dev environment) by distributions outside that closure: what
    the image does not have. The project's own packages are in the image whatever pip says."""
    installed = extra_closure(extra)
    by_module = metadata.packages_distributions()
    theirs = {m for m, dists in by_module.items() if any(_name(d) in installed for d in dists)}
    return set(by_module) - theirs - OWN_PACKAGES


GUARD = """
import importlib.abc, json, os, runpy, sys
missing = set(json.loads(os.environ["MISSING_MODULES"]))
class OnlyTheImagesPackages(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in missing:
            raise ImportError(f"{name} is not installed in the retrain image")
        return None
sys.meta_path.insert(0, OnlyTheImagesPackages())
sys.argv = ["servectl", *sys.argv[1:]]
runpy.run_module("servectl", run_name="__main__")
"""


@pytest.mark.parametrize("command", ["retrain", "retrain-receiver"])
def test_the_retrain_extra_starts_the_commands_the_receiver_runs(command: str) -> None:
    missing = missing_modules("retrain")
    assert {"pulumi_aws", "locust", "moto"} <= missing, (
        f"the dev environment has more than the image: {missing}"
    )
    env = {**os.environ, "MISSING_MODULES": json.dumps(sorted(missing))}
    done = subprocess.run(
        [sys.executable, "-c", GUARD, command, "--help"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (
        f"servectl {command} needs more than the retrain extra: {done.stderr[-2000:]}"
    )
    assert done.stdout.startswith(f"Usage: servectl {command}"), done.stdout


def test_the_guard_refuses_what_the_extra_lacks() -> None:
    """The check can fail: without the Pulumi SDK and the OPA client, `servectl` does not start."""
    missing = missing_modules("retrain") | {"pulumi", "opa_client"}
    done = subprocess.run(
        [sys.executable, "-c", GUARD, "retrain", "--help"],
        cwd=REPO_ROOT, env={**os.environ, "MISSING_MODULES": json.dumps(sorted(missing))},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0 and "is not installed in the retrain image" in done.stderr, done.stderr[-500:]
