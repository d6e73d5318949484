"""The benchmark's MLP: about a million parameters, and it runs in ONNX Runtime."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from benchmarks.mlp_model import INPUT_NAME, LAYER_WIDTHS, OUTPUT_NAME, build_mlp, parameter_count, write_mlp


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_parameter_count_is_about_a_million() -> None:
    count = parameter_count()
    assert 900_000 <= count <= 1_200_000, f"{count} parameters"


def test_parameter_count_matches_the_graph() -> None:
    model = build_mlp()
    stored = sum(int(np.prod(tensor.dims)) for tensor in model.graph.initializer)
    assert stored == parameter_count(), f"graph holds {stored}, parameter_count says {parameter_count()}"


@pytest.mark.parametrize("batch", [1, 5])
def test_runs_in_onnxruntime_with_the_right_output_shape(tmp_path: Path, batch: int) -> None:
    path = tmp_path / "mlp" / "1" / "model.onnx"
    write_mlp(path)
    session = _session(path)
    features = np.random.default_rng(1).normal(size=(batch, LAYER_WIDTHS[0])).astype(np.float32)
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: features})
    assert logits.shape == (batch, LAYER_WIDTHS[-1]), f"output shape {logits.shape}"
    assert logits.dtype == np.float32, f"output dtype {logits.dtype}"
    assert np.isfinite(logits).all(), "non-finite logits"


def test_the_same_seed_builds_the_same_weights() -> None:
    first, second = build_mlp(seed=3), build_mlp(seed=3)
    assert first.SerializeToString() == second.SerializeToString(), "weights differ between builds"
