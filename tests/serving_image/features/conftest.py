"""Fixtures: a built copy of the bundled feature repository (read-only tests); for entity-keyed serving, a
Feast repository built here, models that name its service, and real server processes with and without
``SERVING_FEATURE_REPO``."""

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.feature_repo import built_copy
from tests.serving_image.conftest import ServerProcess, start_server
from tests.serving_image.features.feature_repo import (
    FeatureRepo,
    build_feature_repo,
    entity_model_repository,
)


@pytest.fixture(scope="session")
def built_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled repository's definitions with data/ built (tests must not write to it)."""
    return built_copy(tmp_path_factory.mktemp("feature_repo"))


@pytest.fixture(scope="session")
def feature_repo(tmp_path_factory: pytest.TempPathFactory) -> FeatureRepo:
    """The project's definitions applied and materialized over a dozen real patients."""
    return build_feature_repo(tmp_path_factory.mktemp("feature-repo") / "repo")


@pytest.fixture(scope="session")
def entity_models(
    tmp_path_factory: pytest.TempPathFactory, bundled_models: Path, feature_repo: FeatureRepo
) -> Path:
    """entity-classifier 1 (current service version), 2 (a stale one) and plain-classifier 1 (none)."""
    return entity_model_repository(tmp_path_factory.mktemp("entity-models"), bundled_models, feature_repo)


@pytest.fixture(scope="module")
def feature_server(
    tmp_path_factory: pytest.TempPathFactory, entity_models: Path, feature_repo: FeatureRepo
) -> Iterator[ServerProcess]:
    """A server reading the feature repository, with the default budget, cache and TTL."""
    env = {"SERVING_FEATURE_REPO": str(feature_repo.path)}
    process = start_server(entity_models, tmp_path_factory.mktemp("feature-server"), env=env)
    yield process
    assert process.stop() == 0, f"server did not exit cleanly: {process.stderr()}"


@contextlib.contextmanager
def locked(database: Path) -> Iterator[None]:
    """Hold an exclusive lock on a SQLite database from another connection: its readers block (for up to
    their busy timeout, 5 s in Python's sqlite3) until it is released. A really slow store, not a mock.

    Taking the lock waits (bounded) for readers still finishing: a fetch an earlier test gave up on may
    still hold its shared lock for a moment, and a lock refused at once made the test fail on a loaded
    machine."""
    connection = sqlite3.connect(database, timeout=30, isolation_level=None)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        connection.close()
