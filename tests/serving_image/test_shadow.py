"""Shadow traffic, fault injection and SIGHUP reload of variants, on a real server process."""

import signal
from pathlib import Path
from typing import Any

import requests

from tests.serving_image.conftest import (
    assert_frames,
    capped_doubler_graph,
    doubler_graph,
    logged_events,
    save_model,
    start_server,
    wait_until,
    write_config,
)
from tests.serving_image.test_metrics import sample

BODY: dict[str, Any] = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def repository(tmp_path: Path, variants: str) -> Path:
    root = tmp_path / "repository"
    for version in ("1", "2"):
        save_model(doubler_graph(), root / "doubler" / version / "model.onnx")
    write_config(root / "doubler", f"max_batch_size: 8\nvariants:\n{variants}")
    return root


def metrics(base: str) -> str:
    return requests.get(base + "/metrics", timeout=5).text


def requests_counted(base: str, **labels: str) -> float:
    return sample(metrics(base), "serving_requests_total", **labels)


def test_shadow_copies_are_counted_apart_and_never_answer(tmp_path: Path) -> None:
    root = repository(tmp_path, '  weights: {"1": 100}\n  shadow: {version: "2", percent: 100}\n')
    server = start_server(root, tmp_path / "logs")
    try:
        with requests.Session() as session:
            for _ in range(20):
                response = session.post(f"{server.base}/v2/models/doubler/infer", json=BODY, timeout=5)
                assert response.json()["model_version"] == "1", "live answers always come from version 1"
        wait_until(
            lambda: requests_counted(server.base, version="2", protocol="shadow") >= 20,
            5,
            "every request must be mirrored to version 2",
        )
        text = metrics(server.base)
        assert sample(text, "serving_requests_total", version="2", protocol="rest") == 0
        assert sample(text, "serving_requests_total", version="1", protocol="rest") == 20
    finally:
        assert server.stop() == 0


def test_a_shadow_copy_that_fails_in_the_runtime_is_logged_with_its_traceback(tmp_path: Path) -> None:
    root = tmp_path / "repository"
    save_model(doubler_graph(), root / "doubler" / "1" / "model.onnx")
    save_model(capped_doubler_graph(limit=1), root / "doubler" / "2" / "model.onnx")  # fails every run
    write_config(root / "doubler", 'max_batch_size: 8\nvariants:\n  weights: {"1": 100}\n'
                 '  shadow: {version: "2", percent: 100}\n')  # fmt: skip
    server = start_server(root, tmp_path / "logs")
    try:
        for _ in range(3):
            response = requests.post(f"{server.base}/v2/models/doubler/infer", json=BODY, timeout=5)
            assert response.json()["outputs"][0]["data"] == [2, 4, 6, 8], "the live answer is unharmed"
        wait_until(lambda: len(logged_events(server.stderr(), "shadow_failed")) == 3, 5, server.stderr)
        failed = requests_counted(server.base, version="2", protocol="shadow", outcome="server_error")
        assert failed == 3, "each failed copy is also counted, apart from live traffic"
        for event in logged_events(server.stderr(), "shadow_failed"):
            labels = (event["model"], event["version"], event["error_type"])
            assert labels == ("doubler", "2", "InvalidArgument"), event
            assert "indices element out of data bounds" in event["error"], event
            assert_frames(event["traceback"], ("shadow.py", "_run"), ("runtime.py", "run"))
    finally:
        assert server.stop() == 0, server.stderr()


def test_faults_degrade_one_version_and_sighup_applies_new_weights(tmp_path: Path) -> None:
    root = repository(
        tmp_path, '  weights: {"1": 0, "2": 100}\n  faults:\n    "2": {delay_ms: 5, error_ratio: 0.5}\n'
    )
    server = start_server(root, tmp_path / "logs")
    try:
        with requests.Session() as session:
            codes = [
                session.post(f"{server.base}/v2/models/doubler/infer", json=BODY, timeout=5).status_code
                for _ in range(60)
            ]
        assert set(codes) == {200, 500}, f"about half must fail: {codes}"
        assert 10 <= codes.count(500) <= 50, codes
        failed = sample(metrics(server.base), "serving_requests_total", version="2", outcome="server_error")
        assert failed == codes.count(500)

        write_config(root / "doubler", 'max_batch_size: 8\nvariants:\n  weights: {"1": 100, "2": 0}\n')
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: '"event":"config_reloaded"' in server.stderr(), 5, server.stderr)
        versions = {
            requests.post(f"{server.base}/v2/models/doubler/infer", json=BODY, timeout=5).json()[
                "model_version"
            ]
            for _ in range(20)
        }
        assert versions == {"1"}, "after the reload all traffic goes to version 1, without a restart"

        write_config(root / "doubler", 'variants:\n  weights: {"1": 30, "2": 30}\n')
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: '"event":"config_reload_failed"' in server.stderr(), 5, server.stderr)
        assert "weights must sum to 100" in server.stderr()
        still = requests.post(f"{server.base}/v2/models/doubler/infer", json=BODY, timeout=5).json()
        assert still["model_version"] == "1", "a bad file keeps the config that was in force"
    finally:
        assert server.stop() == 0
