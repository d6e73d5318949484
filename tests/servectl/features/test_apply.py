"""`servectl features apply`: the definitions into a fresh registry, idempotent re-runs, the offline root
moved without a second copy of the definitions, and refusals in one line (local stores; the in-region
stores are tests/servectl/features/test_in_region.py)."""

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from servectl.cli import cli
from serving_image.features import repository
from serving_image.features.schema import FEATURE_VIEW, JOIN_KEY
from tests.feature_repo import copy_repo

END = "2026-11-30T12:00:00Z"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["features", *args])


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    """The bundled definitions and config with only the offline parquet built: no registry, no online
    store."""
    repo = copy_repo(tmp_path / "repo")
    repository.write_data(repo / "data")
    return repo


def radius(repo: Path, patient: int) -> object:
    answer = repository.open_store(repo).get_online_features(
        features=[f"{FEATURE_VIEW}:mean_radius"], entity_rows=[{JOIN_KEY: patient}]
    )
    return answer.to_dict()["mean_radius"][0]


def test_apply_fills_a_fresh_registry_that_materialize_then_uses(fresh: Path) -> None:
    registry = fresh / "data" / "registry.db"
    assert not registry.exists()
    refused = run("materialize", "--repo", str(fresh), "--end", END)
    assert refused.exit_code == 1 and "apply the definitions first" in refused.output, refused.output
    result = run("apply", "--repo", str(fresh), "--definitions", str(fresh))
    assert result.exit_code == 0, result.output
    assert "feature view tumour_measurements" in result.output, result.output
    assert "feature service tabular_classifier_v2" in result.output, result.output
    assert f"applied 6 objects to {registry}" in result.output, result.output
    assert registry.is_file(), "apply writes the registry the config names"
    done = run("materialize", "--repo", str(fresh), "--end", END)
    assert done.exit_code == 0, done.output
    assert radius(fresh, 0) == pytest.approx(17.99), "patient 0's mean radius, scikit-learn's first row"


def test_a_second_apply_keeps_the_recorded_materialization(fresh: Path) -> None:
    assert run("apply", "--repo", str(fresh), "--definitions", str(fresh)).exit_code == 0
    assert run("materialize", "--repo", str(fresh), "--end", END).exit_code == 0
    before = repository.open_store(fresh).get_feature_view(FEATURE_VIEW)
    again = run("apply", "--repo", str(fresh), "--definitions", str(fresh))
    assert again.exit_code == 0, again.output
    after = repository.open_store(fresh).get_feature_view(FEATURE_VIEW)
    assert after.materialization_intervals == before.materialization_intervals, "apply lost the intervals"
    assert after.batch_source == before.batch_source and after.schema == before.schema
    rerun = run("materialize", "--repo", str(fresh), "--end", END)
    assert "already materialized to 2026-11-30T12:00:00Z; nothing to do" in rerun.output, rerun.output


def test_the_offline_root_moves_the_sources_not_the_definitions(tmp_path: Path, fresh: Path) -> None:
    """Config in one directory (no definitions, no data, as the cluster's ConfigMap), definitions in another
    (as the package ships them), the parquet under a third: materialization reads it from there."""
    config = tmp_path / "config"
    config.mkdir()
    shutil.copy2(fresh / "feature_store.yaml", config / "feature_store.yaml")
    offline = tmp_path / "offline"
    source_text = (fresh / "definitions.py").read_bytes()
    shutil.move(fresh / "data", offline)
    result = run("apply", "--repo", str(config), "--definitions", str(fresh), "--offline-root", f"{offline}/")
    assert result.exit_code == 0, result.output
    source = offline / repository.MEASUREMENTS_FILE
    assert f"data source tumour_measurements_source reads {source}" in result.output, result.output
    view = repository.open_store(config).get_feature_view(FEATURE_VIEW)
    assert view.batch_source.path == str(source), view.batch_source.path
    assert not (fresh / "data").exists() and not (config / "data" / repository.MEASUREMENTS_FILE).exists()
    assert run("materialize", "--repo", str(config), "--end", END).exit_code == 0
    assert radius(config, 0) == pytest.approx(17.99)
    assert (fresh / "definitions.py").read_bytes() == source_text, "the definitions themselves are unchanged"


def test_a_remote_registry_needs_an_offline_root(tmp_path: Path, fresh: Path) -> None:
    config = yaml.safe_load((fresh / "feature_store.yaml").read_text())
    config["registry"] = "s3://bucket/feast/registry.db"
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "feature_store.yaml").write_text(yaml.safe_dump(config))
    result = run("apply", "--repo", str(remote), "--definitions", str(fresh))
    assert result.exit_code == 1, result.output
    assert f"{remote / 'feature_store.yaml'}: the registry s3://bucket/feast/registry.db is remote" in (
        result.output
    ), result.output
    assert "--offline-root" in result.output


def test_a_source_outside_data_cannot_be_moved(fresh: Path) -> None:
    definitions = fresh / "definitions.py"
    definitions.write_text(definitions.read_text().replace('f"data/{FEATURE_VIEW}', 'f"/srv/{FEATURE_VIEW}'))
    result = run("apply", "--repo", str(fresh), "--definitions", str(fresh), "--offline-root", "s3://b/f/")
    assert result.exit_code == 1, result.output
    assert "file source 'tumour_measurements_source' reads '/srv/tumour_measurements.parquet'" in (
        result.output
    ), result.output
    assert not (fresh / "data" / "registry.db").exists(), "nothing is applied when a source cannot move"


@pytest.mark.parametrize(
    ("breakage", "named"),
    [
        (lambda repo: (repo / "feature_store.yaml").unlink(), "feature_store.yaml: no such file"),
        (lambda repo: (repo / "definitions.py").write_text("import nowhere\n"), "definitions.py: No module"),
        (lambda repo: (repo / "definitions.py").write_text("x = 1\n"), "no Feast definitions"),
    ],
    ids=["no-config", "definitions-do-not-import", "no-definitions"],
)
def test_a_broken_repository_exits_1_naming_the_file(fresh: Path, breakage: object, named: str) -> None:
    assert callable(breakage)
    breakage(fresh)
    result = run("apply", "--repo", str(fresh), "--definitions", str(fresh))
    assert result.exit_code == 1, result.output
    assert named in result.output and "Traceback" not in result.output, result.output
    assert result.output.count("\n") == 1, result.output
