"""Building a feature repository's data: the files, the swap, and errors that name the file."""

import sqlite3
from pathlib import Path

import pytest

from serving_image.features import repository
from tests.feature_repo import copy_repo


def test_a_build_writes_parquet_registry_and_online_store(built_repo: Path) -> None:
    found = sorted(path.name for path in (built_repo / repository.DATA_DIR).iterdir())
    expected = sorted(
        [repository.MEASUREMENTS_FILE, repository.LABELS_FILE, "registry.db", "online_store.db"]
    )
    assert found == expected, f"data/ holds {found}"
    leftovers = [path.name for path in built_repo.iterdir() if path.name.startswith(".")]
    assert not leftovers, f"scratch directories left behind: {leftovers}"


def test_the_online_store_holds_every_patient(built_repo: Path) -> None:
    with sqlite3.connect(built_repo / repository.DATA_DIR / "online_store.db") as db:
        tables = [row[0] for row in db.execute("select name from sqlite_master where type='table'")]
        assert tables == ["model_serving_tumour_measurements"], f"online store tables {tables}"
        entities = db.execute(f"select count(distinct entity_key) from {tables[0]}").fetchone()[0]
    assert entities == 569, f"{entities} patients materialized"


def test_the_registry_names_every_service(built_repo: Path) -> None:
    store = repository.open_store(built_repo)
    names = sorted(service.name for service in store.list_feature_services())
    assert names == ["tabular_classifier_int8_v1", "tabular_classifier_v1", "tabular_classifier_v2"], names


def test_a_failed_build_keeps_the_last_good_data(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    repository.build(repo)
    before = {path.name: path.read_bytes() for path in (repo / repository.DATA_DIR).iterdir()}
    (repo / "definitions.py").write_text("raise RuntimeError('broken on purpose')\n", encoding="utf-8")
    with pytest.raises(repository.FeatureRepoError, match=r"definitions\.py: broken on purpose"):
        repository.build(repo)
    after = {path.name: path.read_bytes() for path in (repo / repository.DATA_DIR).iterdir()}
    assert after == before, "a failed build changed data/"
    assert sorted(path.name for path in repo.iterdir()) == ["data", "definitions.py", "feature_store.yaml"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, r"feature_store\.yaml: no such file"),
        (
            "project: model_serving\nprovider: local\nonline_store: [not, a, mapping]\n",
            r"feature_store\.yaml: ",
        ),
    ],
    ids=["missing", "malformed"],
)
def test_a_bad_config_is_named(tmp_path: Path, config: str | None, message: str) -> None:
    repo = copy_repo(tmp_path / "repo")
    if config is None:
        (repo / repository.CONFIG_FILE).unlink()
    else:
        (repo / repository.CONFIG_FILE).write_text(config, encoding="utf-8")
    with pytest.raises(repository.FeatureRepoError, match=message):
        repository.open_store(repo)


def test_a_repository_without_definitions_is_refused(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    (repo / "definitions.py").write_text("ANSWER = 42\n", encoding="utf-8")
    with pytest.raises(repository.FeatureRepoError, match="no Feast definitions"):
        repository.definitions(repo)


def test_the_command_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert repository.main(["--repo", str(tmp_path)]) == 1, "a directory without a config should fail"
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "feature_store.yaml: no such file" in error, error
