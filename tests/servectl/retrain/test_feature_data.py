"""`servectl retrain --feature-service`: rows from the feature store; the service in metadata and card."""

import json
from pathlib import Path
from typing import Any

import onnx
import pandas as pd  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner, Result

from servectl.cli import cli
from servectl.retrain.data import InputError
from servectl.retrain.feature_data import _check_columns
from serving_image import model_zoo
from serving_image.features import repository as feature_repository
from serving_image.features.definition import service_version
from tests.feature_repo import built_copy, copy_repo
from tests.servectl.retrain.conftest import MODEL

SERVICE = "tabular_classifier_v1"


@pytest.fixture(scope="module")
def feature_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built copy of the bundled feature repository (read only here)."""
    return built_copy(tmp_path_factory.mktemp("feature_repo"))


def run(repository: Path, *extra: str) -> tuple[Result, dict[str, Any]]:
    args = ["retrain", "--model", MODEL, "--repository", str(repository), "--json", *extra]
    result = CliRunner().invoke(cli, args)
    assert result.stdout.strip(), f"no output: {result.output!r} {result.exception!r}"
    return result, json.loads(result.stdout)


def metadata(repository: Path, version: str) -> dict[str, str]:
    model = onnx.load(str(repository / MODEL / version / "model.onnx"))
    return {entry.key: entry.value for entry in model.metadata_props}


def test_rows_from_the_feature_store_publish_a_version_naming_the_service(
    repository: Path, feature_repo: Path
) -> None:
    result, out = run(repository, "--feature-service", SERVICE, "--feature-repo", str(feature_repo))
    assert result.exit_code == 0, out
    assert (out["outcome"], out["version"]) == ("published", "2"), out
    version = service_version(feature_repository.open_store(feature_repo), SERVICE)
    props = metadata(repository, "2")
    assert (props.get("feature_service"), props.get("feature_service_version")) == (SERVICE, version), props
    card = json.loads((repository / MODEL / "2" / "model_card.json").read_text())
    labels = str(feature_repo / "data" / feature_repository.LABELS_FILE)
    expected = {"uri": labels, "rows": 569, "ordered_by": "event_timestamp", "feature_service": SERVICE}
    assert {key: card["data"].get(key) for key in expected} == expected, card["data"]
    assert card["data"]["feature_service_version"] == version, card["data"]


def test_rows_from_a_csv_record_no_feature_service(repository: Path, fresh_csv: Path) -> None:
    result, out = run(repository, "--data", str(fresh_csv))
    assert result.exit_code == 0, out
    props = metadata(repository, "2")
    assert "feature_service" not in props and "feature_service_version" not in props, props
    card = json.loads((repository / MODEL / "2" / "model_card.json").read_text())
    assert "feature_service" not in card["data"], card["data"]


def test_neither_data_nor_a_service_is_a_usage_error(repository: Path) -> None:
    result = CliRunner().invoke(cli, ["retrain", "--model", MODEL, "--repository", str(repository)])
    assert result.exit_code == 2, result.output
    assert "--data" in result.output and "--feature-service" in result.output, result.output


def test_labels_without_a_column_exit_2_naming_file_and_column(
    repository: Path, feature_repo: Path, tmp_path: Path
) -> None:
    labels = tmp_path / "labels.parquet"
    pd.read_parquet(feature_repo / "data" / "labels.parquet").drop(columns=["label"]).to_parquet(labels)
    args = ("--feature-service", SERVICE, "--feature-repo", str(feature_repo), "--data", str(labels))
    result, out = run(repository, *args)
    assert result.exit_code == 2, out
    assert "labels.parquet: column 'label' missing" in out["reason"], out
    assert not (repository / MODEL / "2").exists(), "nothing is published from bad labels"


def test_too_few_labels_exit_2(repository: Path, feature_repo: Path, tmp_path: Path) -> None:
    labels = tmp_path / "few.parquet"
    pd.read_parquet(feature_repo / "data" / "labels.parquet").head(50).to_parquet(labels)
    args = ("--feature-service", SERVICE, "--feature-repo", str(feature_repo), "--data", str(labels))
    result, out = run(repository, *args)
    assert result.exit_code == 2 and "50 rows; a retrain needs at least 200" in out["reason"], out


def test_an_unknown_service_exits_2_naming_it(repository: Path, feature_repo: Path) -> None:
    result, out = run(repository, "--feature-service", "no_such_service", "--feature-repo", str(feature_repo))
    assert result.exit_code == 2, out
    assert "feature service 'no_such_service'" in out["reason"], out


def test_a_service_in_another_column_order_exits_2(repository: Path, tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "feature_repo")
    with (repo / "definitions.py").open("a", encoding="utf-8") as definitions:
        definitions.write(
            "\nreordered = FeatureService(name='reordered', "
            "features=[tumour_measurements[['worst_radius', 'mean_radius']]])\n"
        )
    feature_repository.build(repo)
    result, out = run(repository, "--feature-service", "reordered", "--feature-repo", str(repo))
    assert result.exit_code == 2, out
    assert "feature 0 is 'worst_radius', the serving version's profile has 'mean_radius'" in out["reason"], (
        out
    )


@pytest.mark.parametrize(
    ("found", "message"),
    [
        (model_zoo.feature_names(), None),
        (model_zoo.feature_names()[:-1], "29 features, the serving version's profile has 30"),
        ([*model_zoo.feature_names(), "extra"], "31 features"),
    ],
    ids=["same", "one-fewer", "one-more"],
)
def test_the_services_columns_must_be_the_profiles(found: list[str], message: str | None) -> None:
    if message is None:
        _check_columns("s", found, model_zoo.feature_names())
        return
    with pytest.raises(InputError, match=message):
        _check_columns("s", found, model_zoo.feature_names())
