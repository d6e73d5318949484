"""Loading a repository: what loads serves, what fails is reported with its path and reason."""

from pathlib import Path

import pytest

from serving_image.repository import (
    MESSAGE_CHARS,
    TRACEBACK_CHARS,
    TRACEBACK_FRAMES,
    Repository,
    failure_fields,
)
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


def raised(depth: int, message: str) -> Exception:
    """An exception raised ``depth`` calls deep (``ping`` and ``pong`` in turn), as ``raised`` caught it."""

    def ping(remaining: int) -> None:
        if remaining == 0:
            raise ValueError(message)
        pong(remaining - 1)

    def pong(remaining: int) -> None:  # two functions in turn: no "[Previous line repeated]" folding
        ping(remaining)

    try:
        ping(depth)
    except ValueError as error:
        return error
    raise AssertionError("ping did not raise")


@pytest.mark.parametrize(
    ("depth", "message", "frames"),
    [
        (3, "shallow", 1 + 4 + 3),  # every frame: raised(), ping at 3, 2, 1, 0 and the pongs between
        (50, "deep", TRACEBACK_FRAMES),  # only the innermost ones
    ],
)
def test_a_logged_traceback_keeps_its_innermost_frames(depth: int, message: str, frames: int) -> None:
    fields = failure_fields(raised(depth, message))
    traceback = fields["traceback"]
    assert (fields["error_type"], fields["error"]) == ("ValueError", message), fields
    kept = sum(traceback.count(f", in {name}\n") for name in ("raised", "ping", "pong"))
    assert kept == frames, f"{kept} frames kept, expected {frames}:\n{traceback}"
    assert "[Previous line repeated" not in traceback
    assert traceback.endswith(f"ValueError: {message}\n"), "the innermost end is kept: the error itself"


def test_a_logged_traceback_and_message_are_bounded_in_size() -> None:
    message = "x" * 10 * TRACEBACK_CHARS
    fields = failure_fields(raised(5, message))
    assert len(fields["traceback"]) <= TRACEBACK_CHARS + len("[...]\n"), len(fields["traceback"])
    assert fields["traceback"].startswith("[...]\n"), "a cut traceback says that it was cut"
    assert fields["traceback"].endswith("x" * 100 + "\n"), "the cut keeps the end"
    assert fields["error"] == message[:MESSAGE_CHARS], len(fields["error"])


def unloaded(repository: Repository) -> list[tuple[str, str]]:
    return [(model.name, name) for model, name, _ in repository.unloaded_versions()]


def test_sighup_finds_new_and_failed_numbered_versions_of_serving_models(tmp_path: Path) -> None:
    root = tmp_path / "repository"
    save_model(doubler_graph(), root / "m" / "1" / "model.onnx")
    (root / "m" / "2").mkdir()  # no model.onnx: failed at start, tried again
    (root / "m" / "latest").mkdir()  # a misnamed directory never loads: not tried again
    (root / "empty").mkdir()  # a model that did not serve at start waits for a restart
    repository = Repository.load(root, intra_op_threads=1)
    save_model(doubler_graph(), root / "m" / "3" / "model.onnx")
    save_model(doubler_graph(), root / "empty" / "1" / "model.onnx")
    assert unloaded(repository) == [("m", "2"), ("m", "3")]
    model = repository.models["m"]
    loaded = repository.load_version(model, "3", root / "m" / "3")
    assert loaded.ready and loaded.runtime is not None and loaded.runtime.warmed, loaded.error
    failed = repository.load_version(model, "2", root / "m" / "2")
    assert not failed.ready and failed.error == f"{root / 'm' / '2' / 'model.onnx'}: file not found", (
        failed.error
    )


def test_a_repository_of_one_version_looks_for_no_new_ones(tmp_path: Path) -> None:
    save_model(doubler_graph(), tmp_path / "model.onnx")
    repository = Repository.load_one_version(tmp_path, "m", "1", intra_op_threads=1)
    save_model(doubler_graph(), tmp_path / "2" / "model.onnx")
    assert repository.unloaded_versions() == [], "its directory is the version itself"


@pytest.mark.parametrize(
    ("variants", "refused"),
    [
        ('{weights: {"1": 90, "2": 10}}', True),
        ('{weights: {"1": 100}, routes: [{header: x-canary, value: "yes", version: "2"}]}', True),
        ('{weights: {"1": 100}, shadow: {version: "2", percent: 10}}', True),
        ('{weights: {"1": 100, "2": 0}}', False),
        ('{weights: {"1": 100}, faults: {"2": {delay_ms: 5}}}', False),
    ],
    ids=["weight", "route", "shadow", "zero-weight", "fault-only"],
)
def test_a_reload_that_routes_to_a_version_that_did_not_load_is_refused(
    tmp_path: Path, variants: str, refused: bool
) -> None:
    save_model(doubler_graph(), tmp_path / "m" / "1" / "model.onnx")
    (tmp_path / "m" / "2").mkdir()
    write_config(tmp_path / "m", 'variants: {weights: {"1": 100}}\n')
    repository = Repository.load(tmp_path, intra_op_threads=1)
    write_config(tmp_path / "m", f"variants: {variants}\n")
    problems = repository.reload_variants()
    router = repository.models["m"].router
    assert router is not None
    if refused:
        assert len(problems) == 1 and "routes to versions that did not load (2: " in problems[0], problems
        assert router.versions == ("1",) and router.shadow_version is None, "the old config stands"
    else:
        assert problems == [], problems
