"""Build a feature repository's data: the offline store's parquet, the registry, the online store.

``python -m serving_image.features.repository [--repo DIR]`` (run by ``build_models`` and so by
``make setup``) writes ``data/`` afresh: the parquet from :mod:`serving_image.features.offline`, the
registry from the repository's own Python definitions (what ``feast apply`` does), and the SQLite online
store materialized up to now. Everything is built in a scratch copy of the repository and swapped in at
the end, so a failed build leaves the last good ``data/`` and readers never see a half-written one.
"""

import argparse
import contextlib
import importlib.util
import io
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving_image.features.schema import FEATURE_VIEW

DEFAULT_REPO = Path(__file__).resolve().parents[1] / "feature_repo"
CONFIG_FILE = "feature_store.yaml"
DATA_DIR = "data"
MEASUREMENTS_FILE = f"{FEATURE_VIEW}.parquet"
LABELS_FILE = "labels.parquet"


class FeatureRepoError(Exception):
    """The repository or its stores cannot be used; the message names the file and the reason."""


def open_store(repo: Path) -> Any:
    """A ``FeatureStore`` on ``repo``; :class:`FeatureRepoError` naming the config file if it is unusable."""
    config = repo / CONFIG_FILE
    if not config.is_file():
        raise FeatureRepoError(f"{config}: no such file (a feature repository holds {CONFIG_FILE})")
    from feast import FeatureStore

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return FeatureStore(repo_path=str(repo.resolve()))
    except Exception as error:  # Feast raises pydantic, yaml and its own errors for a bad config
        raise FeatureRepoError(f"{config}: {one_line(error)}") from None


def definitions(repo: Path) -> list[Any]:
    """The Feast objects the repository's Python files define (what ``feast apply`` collects)."""
    from feast import Entity, FeatureService, FeatureView, OnDemandFeatureView
    from feast.data_source import DataSource

    kinds = (Entity, DataSource, FeatureView, OnDemandFeatureView, FeatureService)
    found: list[Any] = []
    for path in sorted(repo.glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"_feature_repo_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise FeatureRepoError(f"{path}: not a Python module")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            raise FeatureRepoError(f"{path}: {one_line(error)}") from None
        found.extend(value for value in vars(module).values() if isinstance(value, kinds))
    if not found:
        raise FeatureRepoError(f"{repo}: no Feast definitions in its Python files")
    return found


def build(repo: Path = DEFAULT_REPO, end: datetime | None = None) -> Path:
    """Write ``repo/data`` afresh (parquet, registry, online store materialized to ``end``, default now)."""
    if not (repo / CONFIG_FILE).is_file():
        raise FeatureRepoError(f"{repo / CONFIG_FILE}: no such file")
    scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=repo))
    try:
        for path in (repo / CONFIG_FILE, *repo.glob("*.py")):
            shutil.copy2(path, scratch / path.name)
        write_data(scratch / DATA_DIR)
        store = open_store(scratch)
        objects = definitions(scratch)
        with contextlib.redirect_stdout(io.StringIO()):
            store.apply(objects)
            store.materialize_incremental(end_date=end or datetime.now(UTC))
        _swap(scratch / DATA_DIR, repo / DATA_DIR)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return repo / DATA_DIR


def write_data(data: Path) -> None:
    """The offline store's parquet files; the same bytes on every run with the same pyarrow."""
    # Imported here: servectl imports this module for its paths, and scikit-learn is slow to import.
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    from serving_image.features import offline

    data.mkdir(parents=True, exist_ok=True)
    pq.write_table(offline.measurements(), data / MEASUREMENTS_FILE)
    pq.write_table(offline.labels(), data / LABELS_FILE)


def _swap(source: Path, target: Path) -> None:
    # Two renames: readers see the old directory or the new one, never a mix.
    old = target.with_name(f".{target.name}-old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(source, target)
    shutil.rmtree(old, ignore_errors=True)


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m serving_image.features.repository",
        description="Build a feature repository's data: parquet, registry and materialized online store.",
    )
    parser.add_argument("--repo", type=Path, default=DEFAULT_REPO, help=f"default: {DEFAULT_REPO}")
    args = parser.parse_args(argv)
    try:
        data = build(args.repo)
    except FeatureRepoError as error:
        print(f"feature repository: {error}", file=sys.stderr)
        return 1
    print(f"built {data}: {MEASUREMENTS_FILE}, {LABELS_FILE}, registry and online store")
    return 0


if __name__ == "__main__":
    sys.exit(main())
