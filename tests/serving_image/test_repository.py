"""Loading a repository: what loads serves, what fails is reported with its path and reason."""

from pathlib import Path

from serving_image.repository import Repository
from tests.serving_image.conftest import doubler_graph, save_model, write_config


def build(tmp_path: Path) -> Path:
    save_model(doubler_graph(), tmp_path / "good" / "1" / "model.onnx")
    save_model(doubler_graph(), tmp_path / "good" / "3" / "model.onnx")
    (tmp_path / "corrupt" / "1").mkdir(parents=True)
    (tmp_path / "corrupt" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    (tmp_path / "empty").mkdir()
    save_model(doubler_graph(), tmp_path / "badconfig" / "1" / "model.onnx")
    write_config(tmp_path / "badconfig", "variants:\n  weights: {1: 50, 9: 50}\n")
    return tmp_path


def test_good_model_loads_with_latest_version_as_default(tmp_path: Path) -> None:
    repository = Repository.load(build(tmp_path), intra_op_threads=1)
    good = repository.models["good"]
    assert good.ready
    assert good.router is not None and good.router.choose({}) == "3", "the latest version serves by default"


def test_failures_are_reported_with_path_and_reason(tmp_path: Path) -> None:
    repository = Repository.load(build(tmp_path), intra_op_threads=1)
    failures = {(f.model, f.version): f for f in repository.failures()}
    assert set(failures) == {("corrupt", "1"), ("empty", ""), ("badconfig", "")}, failures
    assert failures[("corrupt", "1")].path == str(tmp_path / "corrupt" / "1" / "model.onnx")
    assert (
        "INVALID_PROTOBUF" in failures[("corrupt", "1")].reason
        or "Protobuf" in failures[("corrupt", "1")].reason
    )
    assert "no version directories" in failures[("empty", "")].reason
    assert "names versions with no directory: ['9']" in failures[("badconfig", "")].reason
    assert not repository.ready, "the repository is not ready while a model failed"
