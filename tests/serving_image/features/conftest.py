"""A built copy of the bundled feature repository, shared by the module's read-only tests."""

from pathlib import Path

import pytest

from tests.feature_repo import built_copy


@pytest.fixture(scope="session")
def built_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled repository's definitions with data/ built (tests must not write to it)."""
    return built_copy(tmp_path_factory.mktemp("feature_repo"))
