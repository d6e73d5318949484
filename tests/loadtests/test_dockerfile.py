"""The load-test image: what the in-cluster Jobs (stacks/components/load_test.py) expect of it."""

import json
from pathlib import Path

from dockerfile_parse import DockerfileParser

from stacks.components import load_test

DOCKERFILE = Path(__file__).resolve().parents[2] / "loadtests" / "Dockerfile"


def instructions(kind: str) -> list[str]:
    parser = DockerfileParser(path=str(DOCKERFILE))
    return [item["value"] for item in parser.structure if item["instruction"] == kind]


def test_runs_as_the_uid_the_jobs_require() -> None:
    uid = load_test.RUN_AS_USER
    assert instructions("USER")[-1] == f"{uid}:{uid}", instructions("USER")


def test_loadtests_where_the_jobs_run_them() -> None:
    assert f"loadtests {load_test.APP_DIR}/loadtests" in instructions("COPY"), instructions("COPY")
    assert instructions("WORKDIR")[-1] == load_test.APP_DIR, instructions("WORKDIR")


def test_installs_the_loadtest_extra_under_constraints() -> None:
    (install,) = [r for r in instructions("RUN") if "pip install" in r]
    assert "-c constraints.txt '.[loadtest]'" in install, install


def test_default_command_is_locust_with_the_shared_settings() -> None:
    command = json.loads(instructions("CMD")[-1])
    assert command[:3] == ["python", "-m", "locust"] and "/app/loadtests/locust.conf" in command, command
