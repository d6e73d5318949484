"""`servectl retrain --server-pid`: a running server loads the published version and takes the canary."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from servectl.cli import cli
from serving_image import model_zoo
from tests.servectl.retrain.conftest import MODEL, synthetic
from tests.serving_image.conftest import logged_events, start_server, wait_until

CANARY_DRAWS = 400
"""Default-routed requests sent to see the 5% canary answer: all missing it has odds of 0.95**400, ~1e-9."""


def infer(base: str, path: str = "") -> requests.Response:
    x, _ = synthetic(1, seed=9)
    payload = {
        "inputs": [
            {
                "name": model_zoo.INPUT_NAME,
                "shape": list(x.shape),
                "datatype": "FP32",
                "data": x.ravel().tolist(),
            }
        ]
    }
    return requests.post(f"{base}/v2/models/{MODEL}{path}/infer", json=payload, timeout=10)


def retrain(repository: Path, data: Path, *extra: str) -> dict[str, Any]:
    args = [
        "retrain",
        "--model",
        MODEL,
        "--data",
        str(data),
        "--repository",
        str(repository),
        "--json",
        *extra,
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, f"{result.output!r} {result.exception!r}"
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def test_retrain_with_server_pid_makes_the_running_server_serve_the_new_version(
    repository: Path, fresh_csv: Path, tmp_path: Path
) -> None:
    server = start_server(repository, tmp_path / "logs")
    try:
        assert infer(server.base, "/versions/2").status_code == 404
        out = retrain(repository, fresh_csv, "--server-pid", str(server.process.pid))
        assert out["version"] == "2", out
        assert f"sent SIGHUP to server pid {server.process.pid}" in out["reason"], out
        wait_until(lambda: logged_events(server.stderr(), "config_reloaded"), 60, server.stderr)
        assert not logged_events(server.stderr(), "config_reload_failed"), server.stderr()
        metadata = requests.get(f"{server.base}/v2/models/{MODEL}", timeout=5).json()
        assert metadata["versions"] == ["1", "2"], metadata
        asked = infer(server.base, "/versions/2")
        assert asked.status_code == 200 and asked.json()["model_version"] == "2", asked.text
        served = set()
        for _ in range(CANARY_DRAWS):
            served.add(infer(server.base).json()["model_version"])
            if served == {"1", "2"}:
                break
        assert served == {"1", "2"}, f"the 95/5 canary weights did not apply: {served}"
        metrics = requests.get(f"{server.base}/metrics", timeout=5).text
        monitored = f'serving_drift_monitored{{model="{MODEL}",version="2"}} 1.0'
        assert monitored in metrics, "the new version's training profile is counted against"
    finally:
        assert server.stop() == 0, server.stderr()


@pytest.mark.parametrize("pid", ["0", "-1"])
def test_server_pid_must_name_one_process(repository: Path, fresh_csv: Path, pid: str) -> None:
    # 0 and -1 would signal the process group or every process the user owns.
    args = ["retrain", "--model", MODEL, "--data", str(fresh_csv), "--repository", str(repository)]
    result = CliRunner().invoke(cli, [*args, "--server-pid", pid])
    assert result.exit_code == 2 and "--server-pid" in result.output, result.output
    assert not (repository / MODEL / "2").exists(), "nothing is trained on bad arguments"


def test_a_server_pid_with_publish_buckets_is_refused(repository: Path, fresh_csv: Path) -> None:
    # Publishing to buckets starts no canary, so there is nothing to signal a local server about.
    args = ["retrain", "--model", MODEL, "--data", str(fresh_csv), "--repository", str(repository)]
    result = CliRunner().invoke(cli, [*args, "--server-pid", "1234", "--publish-bucket", "s3://b/models"])
    assert result.exit_code == 2 and "--server-pid is for a local server" in result.output, result.output
    assert not (repository / MODEL / "2").exists(), "nothing is trained on bad arguments"


def test_a_server_pid_with_no_process_still_publishes_and_says_so(repository: Path, fresh_csv: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid names no process now
    gone = child.pid
    out = retrain(repository, fresh_csv, "--server-pid", str(gone))
    assert out["version"] == "2", out
    assert f"no process {gone} to signal" in out["reason"], out
    assert "weights written" in out["reason"], out
