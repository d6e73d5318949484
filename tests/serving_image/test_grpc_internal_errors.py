"""A gRPC request that fails inside the server: INTERNAL for the client, the traceback for the operator.

The model is a doubler that ONNX Runtime itself fails on three rows or more (see
``capped_doubler_graph``), so the failure travels the whole path a bug would: runtime, batcher,
data plane, the gRPC service.
"""

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.serving_image.conftest import (
    ServerProcess,
    assert_frames,
    capped_doubler_graph,
    save_model,
    start_server,
    wait_until,
    write_config,
)

TRACEBACK_START = "Traceback (most recent call last):\n"


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("capped-repository")
    save_model(capped_doubler_graph(limit=3), root / "capped" / "1" / "model.onnx")
    write_config(root / "capped", "max_batch_size: 8\nmax_queue_delay_ms: 0\n")
    server = start_server(root, tmp_path_factory.mktemp("capped-logs"))
    yield server
    assert server.stop() == 0, server.stderr()


def infer(server: ServerProcess, rows: int) -> list[list[float]]:
    infer_input = grpcclient.InferInput("x", [rows, 4], "FP32")
    infer_input.set_data_from_numpy(np.ones((rows, 4), np.float32))
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        answer: list[list[float]] = client.infer("capped", [infer_input]).as_numpy("y").tolist()
        return answer
    finally:
        client.close()


def test_a_failure_inside_the_server_is_internal_for_the_client_and_traced_for_the_operator(
    capped_server: ServerProcess,
) -> None:
    assert infer(capped_server, 2) == [[2.0] * 4] * 2, "two rows are within what the model takes"
    assert TRACEBACK_START not in capped_server.stderr(), "nothing has failed yet"
    with pytest.raises(InferenceServerException) as raised:
        infer(capped_server, 3)
    assert raised.value.status() == "StatusCode.INTERNAL", raised.value
    assert raised.value.message() == "internal server error", "the client learns nothing of the inside"

    # The warm-up's failure at three rows is in stderr already, as a JSON line; this is the plain traceback.
    wait_until(lambda: TRACEBACK_START in capped_server.stderr(), 5, capped_server.stderr)
    stderr = capped_server.stderr()
    assert stderr.count(TRACEBACK_START) == 1, f"one traceback for the one failed request:\n{stderr}"
    traceback = stderr[stderr.index(TRACEBACK_START) :]
    assert_frames(traceback, ("grpc_service.py", "ModelInfer"), ("runtime.py", "run"))
    assert "indices element out of data bounds, idx=3" in traceback, traceback
    assert infer(capped_server, 1) == [[2.0] * 4], "the server goes on serving after the failure"
