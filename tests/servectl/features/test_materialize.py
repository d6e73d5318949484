"""`servectl features materialize`: incremental intervals, new rows served after it, failures in one line."""

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner, Result

from servectl.cli import cli
from servectl.features.materialize import rfc3339
from serving_image.features import offline, repository
from serving_image.features.schema import FEATURE_NAMES, FEATURE_VIEW, JOIN_KEY
from tests.feature_repo import built_copy

NEW_PATIENT = 10_000


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One built repository, copied for each test (materialization changes it)."""
    return built_copy(tmp_path_factory.mktemp("pristine"))


@pytest.fixture
def repo(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "repo"))


def run(repo: Path, *extra: str) -> Result:
    return CliRunner().invoke(cli, ["features", "materialize", "--repo", str(repo), *extra])


def last_end(repo: Path) -> datetime:
    view = repository.open_store(repo).get_feature_view(FEATURE_VIEW)
    end: datetime = view.materialization_intervals[-1][1]
    return end.astimezone(UTC)


def online_radius(repo: Path, patient: int) -> Any:
    store = repository.open_store(repo)
    answer = store.get_online_features(
        features=[f"{FEATURE_VIEW}:mean_radius"], entity_rows=[{JOIN_KEY: patient}]
    ).to_dict()
    return answer["mean_radius"][0]


def add_measurement(repo: Path, when: datetime) -> None:
    """A new patient's row at ``when`` in the offline store's parquet."""
    path = repo / "data" / repository.MEASUREMENTS_FILE
    table = pq.read_table(path)
    row = {JOIN_KEY: [NEW_PATIENT], offline.TIMESTAMP: [when], **{name: [1.5] for name in FEATURE_NAMES}}
    pq.write_table(pa.concat_tables([table, pa.table(row, schema=table.schema)]), path)


def test_materialization_goes_from_the_last_end_to_the_given_end(repo: Path) -> None:
    before = last_end(repo)
    end = before + timedelta(hours=1)
    result = run(repo, "--end", rfc3339(end))
    assert result.exit_code == 0, result.output
    expected = f"{FEATURE_VIEW}: materialized {rfc3339(before)} .. {rfc3339(end)}\n"
    assert result.stdout == expected, f"printed {result.stdout!r}"
    assert last_end(repo) == end.replace(microsecond=0) or last_end(repo) == end, last_end(repo)


def test_a_new_row_is_served_only_after_materialization(repo: Path) -> None:
    start = last_end(repo)
    add_measurement(repo, start + timedelta(minutes=1))
    assert online_radius(repo, NEW_PATIENT) is None, "the new patient was served before materialization"
    result = run(repo, "--end", rfc3339(start + timedelta(hours=1)))
    assert result.exit_code == 0, result.output
    assert online_radius(repo, NEW_PATIENT) == 1.5, "the new row was not materialized"


def test_an_end_before_the_last_one_does_nothing(repo: Path) -> None:
    before = repository.open_store(repo).get_feature_view(FEATURE_VIEW).materialization_intervals
    result = run(repo, "--end", rfc3339(last_end(repo) - timedelta(days=1)))
    assert result.exit_code == 0, result.output
    assert "already materialized to" in result.stdout and "nothing to do" in result.stdout, result.stdout
    after = repository.open_store(repo).get_feature_view(FEATURE_VIEW).materialization_intervals
    assert after == before, "an earlier end recorded an interval (the freshness gauge would go backwards)"


def test_the_default_end_is_now(repo: Path) -> None:
    started = datetime.now(UTC)
    result = run(repo)
    assert result.exit_code == 0, result.output
    assert started - timedelta(seconds=1) <= last_end(repo) <= datetime.now(UTC), last_end(repo)


def _no_config(repo: Path) -> str:
    (repo / repository.CONFIG_FILE).unlink()
    return "feature_store.yaml: no such file"


def _bad_config(repo: Path) -> str:
    (repo / repository.CONFIG_FILE).write_text("project: model_serving\nonline_store: 12\n", encoding="utf-8")
    return "feature_store.yaml: "


def _no_registry(repo: Path) -> str:
    (repo / "data" / "registry.db").unlink()
    return "registry.db: no such file"


def _no_parquet(repo: Path) -> str:
    (repo / "data" / repository.MEASUREMENTS_FILE).unlink()
    return f"{repository.MEASUREMENTS_FILE}: "


def _corrupt_online_store(repo: Path) -> str:
    # With no row in the interval Feast never opens the store, so give it one to write.
    add_measurement(repo, last_end(repo) + timedelta(minutes=1))
    (repo / "data" / "online_store.db").write_bytes(b"this is not a database" * 100)
    return "online_store.db: "


@pytest.mark.parametrize(
    "breakage", [_no_config, _bad_config, _no_registry, _no_parquet, _corrupt_online_store]
)
def test_a_broken_repository_exits_1_naming_the_file(repo: Path, breakage: Any) -> None:
    expected = breakage(repo)
    result = run(repo, "--end", rfc3339(datetime.now(UTC) + timedelta(hours=1)))
    assert result.exit_code == 1, f"{breakage.__name__}: exit {result.exit_code}: {result.output}"
    assert "Traceback" not in result.output, result.output
    assert isinstance(result.exception, SystemExit), f"raised {result.exception!r}"
    lines = [line for line in result.stderr.splitlines() if line.startswith("servectl features")]
    assert len(lines) == 1 and expected in lines[0], f"{breakage.__name__}: stderr {result.stderr!r}"
    assert not (breakage is _no_registry and (repo / "data" / "registry.db").exists()), "registry created"


@pytest.mark.parametrize("end", ["tomorrow", "2026-11-30T18:00:00"])
def test_a_bad_end_is_a_usage_error(repo: Path, end: str) -> None:
    result = run(repo, "--end", end)
    assert result.exit_code == 2, result.output
    assert "--end" in result.output, result.output


def test_rfc3339_is_utc_whole_seconds() -> None:
    when = datetime(2026, 11, 30, 19, 0, 5, 123456, tzinfo=UTC) + timedelta(hours=0)
    assert rfc3339(when) == "2026-11-30T19:00:05Z", rfc3339(when)
    assert np.datetime64(rfc3339(when).rstrip("Z")) == np.datetime64("2026-11-30T19:00:05")
