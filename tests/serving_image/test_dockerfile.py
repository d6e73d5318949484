"""The Dockerfile: its shape, and its CMD and HEALTHCHECK run as processes (no container engine here)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from dockerfile_parse import DockerfileParser

from tests.serving_image.conftest import REPO_ROOT, free_port

DOCKERFILE = REPO_ROOT / "serving_image" / "Dockerfile"


@pytest.fixture(scope="module")
def parsed() -> DockerfileParser:
    parser = DockerfileParser(path=str(DOCKERFILE))
    assert parser.structure, "the Dockerfile must parse into instructions"
    return parser


def final_stage(parser: DockerfileParser) -> list[dict[str, str]]:
    starts = [n for n, item in enumerate(parser.structure) if item["instruction"] == "FROM"]
    return list(parser.structure[starts[-1] :])


def exec_form(instruction: dict[str, str]) -> list[str]:
    value = instruction["value"].strip()
    if value.startswith("CMD "):
        value = value[4:].strip()
    command: list[str] = json.loads(value)
    return command


def test_multi_stage_slim_non_root(parsed: DockerfileParser) -> None:
    froms = [item["value"] for item in parsed.structure if item["instruction"] == "FROM"]
    assert len(froms) >= 2, "a build stage and a runtime stage"
    base_args = [item["value"] for item in parsed.structure if item["instruction"] == "ARG"]
    assert any(arg.startswith("PYTHON_IMAGE=") and "-slim" in arg for arg in base_args), base_args
    stages = {item["value"].split()[-1] for item in parsed.structure if item["instruction"] == "FROM"}
    assert all("PYTHON_IMAGE" in image or image.split()[0] in stages for image in froms), (
        f"every stage uses the slim base, directly or through an earlier stage: {froms}"
    )
    runtime = final_stage(parsed)
    users = [item["value"] for item in runtime if item["instruction"] == "USER"]
    assert users and not users[-1].startswith(("root", "0")), f"runtime must not run as root: {users}"
    copied = " ".join(item["value"] for item in runtime if item["instruction"] == "COPY")
    assert "/opt/build" not in copied, "the training environment must stay in the build stage"


def test_healthcheck_probes_readiness(parsed: DockerfileParser) -> None:
    checks = [item for item in final_stage(parsed) if item["instruction"] == "HEALTHCHECK"]
    assert checks and "serving_image.healthcheck" in checks[0]["value"], checks
    source = (Path(__file__).resolve().parents[2] / "serving_image" / "healthcheck.py").read_text()
    assert "/v2/health/ready" in source, "the healthcheck probes readiness, not liveness"


def runtime_env(parsed: DockerfileParser) -> dict[str, str]:
    env = dict(parsed.envs)
    env.pop("PATH", None)
    return env


def test_cmd_and_healthcheck_run_the_server_as_a_process(parsed: DockerfileParser, tmp_path: Path) -> None:
    cmd = next(item for item in reversed(parsed.structure) if item["instruction"] == "CMD")
    command = exec_form(cmd)
    assert command[0] == "python", command
    http_port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        **runtime_env(parsed),
        "SERVING_MODEL_REPOSITORY": str(REPO_ROOT / "serving_image" / "models"),
        "SERVING_HOST": "127.0.0.1",  # the image listens on all interfaces; tests stay on loopback
        "SERVING_HTTP_PORT": str(http_port),
        "SERVING_GRPC_PORT": str(grpc_port),
    }
    process = subprocess.Popen([sys.executable, *command[1:]], env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                if requests.get(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the CMD never became ready"
            time.sleep(0.1)
        check = next(item for item in final_stage(parsed) if item["instruction"] == "HEALTHCHECK")
        probe = json.loads(check["value"][check["value"].index("[") :])
        assert subprocess.run([sys.executable, *probe[1:]], env=env, timeout=10, check=False).returncode == 0
    finally:
        process.terminate()
        assert process.wait(30) == 0, "SIGTERM must drain and exit 0"
