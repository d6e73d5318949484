"""Throw-away copies of the bundled feature repository for tests (tests never write the source tree's data/).

A copy holds the repository's feature_store.yaml and Python definitions; :func:`built_copy` also builds its
data/ the way ``make setup`` does (serving_image.features.repository.build).
"""

import shutil
from pathlib import Path

from serving_image.features import repository

BUNDLED = repository.DEFAULT_REPO


def copy_repo(destination: Path) -> Path:
    """The bundled repository's config and definitions copied into ``destination`` (no data)."""
    destination.mkdir(parents=True, exist_ok=True)
    for path in (BUNDLED / repository.CONFIG_FILE, *BUNDLED.glob("*.py")):
        shutil.copy2(path, destination / path.name)
    return destination


def built_copy(destination: Path) -> Path:
    """A copy of the bundled repository with its data built (parquet, registry, online store)."""
    repository.build(copy_repo(destination))
    return destination
