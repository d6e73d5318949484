"""The `assignment` label of serving_requests_total and the sticky-user counter, on real server processes:
how each request reached its version, and the mesh's header believed only when the server is told to."""

from pathlib import Path
from typing import Any

import pytest
import requests

from tests.serving_image.conftest import ServerProcess, doubler_graph, save_model, start_server, write_config
from tests.serving_image.test_metrics import sample

BODY: dict[str, Any] = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
VARIANTS = """variants:
  weights: {"1": 50, "2": 50}
  sticky: {header: x-user-id}
  routes: [{header: x-segment, value: enterprise, version: "2"}]
"""


def _repository(root: Path) -> Path:
    for version in ("1", "2"):
        save_model(doubler_graph(), root / "doubler" / version / "model.onnx")
    write_config(root / "doubler", VARIANTS)
    return root


@pytest.fixture(params=[False, True], ids=["standalone", "behind-the-mesh"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    env = {"SERVING_TRUST_ASSIGNMENT_HEADER": "true"} if request.param else {}
    process = start_server(_repository(tmp_path / "repository"), tmp_path / "logs", env=env)
    yield process, request.param
    process.stop()


def _infer(server: ServerProcess, path: str = "/v2/models/doubler/infer", **headers: str) -> None:
    answer = requests.post(server.base + path, json=BODY, headers=headers, timeout=5)
    assert answer.status_code == 200, answer.text


def _total(text: str, name: str, **labels: str) -> float:
    """Summed over versions (the router picks them at random)."""
    return sum(sample(text, name, version=v, **labels) for v in ("1", "2"))


def test_each_request_is_labelled_with_how_it_reached_its_version(server: tuple[ServerProcess, bool]) -> None:
    process, trusted = server
    for _ in range(3):
        _infer(process)  # weighted
        _infer(process, "/v2/models/doubler/versions/1/infer")  # explicit
        _infer(process, **{"x-segment": "enterprise"})  # header route
        for user in ("ann", "bob"):
            _infer(process, **{"x-user-id": user})  # sticky: 2 users, 3 requests each
    # A header the gateway's routes set (and overwrite): believed only behind the mesh, where no client
    # can send it; a standalone server ignores it, so a client cannot relabel its request.
    _infer(process, **{"x-variant-assignment": "header"})
    text = requests.get(process.base + "/metrics", timeout=5).text
    counted = {
        how: _total(text, "serving_requests_total", protocol="rest", assignment=how, outcome="success")
        for how in ("weighted", "explicit", "header", "sticky")
    }
    assert counted == {
        "weighted": 3 if trusted else 4,
        "explicit": 3,
        "header": 4 if trusted else 3,
        "sticky": 6,
    }, counted
    if not trusted:
        on_v1 = sample(text, "serving_requests_total", version="1", assignment="header")
        assert on_v1 == 0, "the header route sends to v2"
    users = _total(text, "serving_sticky_users_total", model="doubler")
    assert users == 2, f"two users in six sticky requests are two first assignments, not {users}"
