"""Apply the feature repository's definitions to the registry a `feature_store.yaml` names (`feast apply`).

The config and the definitions may live apart: in a cluster the config is the platform's ConfigMap
(`/etc/feast`: DynamoDB, the S3 registry, no Python) and the definitions are the ones the image's package
ships (`serving_image/feature_repo`). One set of definitions serves both places: their file sources name
their parquet under the repository's `data/`, and ``offline_root`` moves that prefix (to
`s3://<bucket>/features/` in a region) for this apply only, so there are never two copies of the definitions.

Feast's apply is idempotent: an unchanged view keeps its recorded materialization intervals, and a table
that exists (infra creates them) is described and left alone, never created.
"""

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving_image.features.repository import DATA_DIR, FeatureRepoError, definitions, one_line, open_store


class ApplyError(Exception):
    """The definitions cannot be applied; the message names the file or location and the reason."""


@dataclass(frozen=True)
class Applied:
    """What one apply registered, and where."""

    registry: str
    """The registry's location, as the config names it (local paths made absolute)."""
    objects: tuple[tuple[str, str], ...]
    """(kind, name) of every object applied, in the order listed."""
    sources: tuple[tuple[str, str], ...]
    """(source name, path) of every file source: where materialization will read."""


def apply(repo: Path, definitions_dir: Path, offline_root: str | None = None) -> Applied:
    """Register ``definitions_dir``'s Feast objects in ``repo``'s registry (and let Feast's online store check
    its tables), with the file sources' `data/` prefix moved under ``offline_root`` when given."""
    try:
        store = open_store(repo)
        objects = definitions(definitions_dir)
    except FeatureRepoError as error:
        raise ApplyError(str(error)) from None
    registry = _registry_location(repo, store.config.registry.path)
    if offline_root is None and "://" in registry:
        raise ApplyError(
            f"{repo / 'feature_store.yaml'}: the registry {registry} is remote, so the sources' local "
            f"{DATA_DIR}/ paths would mean nothing to its readers; give --offline-root (e.g. s3://BUCKET/features/)"
        )
    sources = rebase_sources(objects, definitions_dir, offline_root)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            store.apply(objects)
    except Exception as error:  # Feast, botocore and filesystem errors alike: say where it wrote
        raise ApplyError(f"{registry}: {one_line(error)}") from None
    listed = tuple((_kind(o), str(o.name)) for o in sorted(objects, key=lambda o: (_kind(o), o.name)))
    return Applied(registry=registry, objects=listed, sources=sources)


def rebase_sources(
    objects: list[Any], definitions_dir: Path, offline_root: str | None
) -> tuple[tuple[str, str], ...]:
    """Point every file source whose path is under `data/` at the same file under ``offline_root``.

    A source outside `data/` (an absolute path, another URL) is not the repository's own data and cannot be
    moved safely, so it is refused rather than registered where the region's readers cannot reach it."""
    from feast import FileSource

    moved = []
    prefix = f"{DATA_DIR}/"
    for source in (o for o in objects if isinstance(o, FileSource)):
        path = source.path
        if offline_root is not None:
            if not path.startswith(prefix):
                raise ApplyError(
                    f"{definitions_dir}: file source {source.name!r} reads {path!r}, not a file under "
                    f"{prefix}, so --offline-root cannot move it"
                )
            source.file_options.uri = f"{offline_root.rstrip('/')}/{path.removeprefix(prefix)}"
        moved.append((str(source.name), source.path))
    return tuple(moved)


def _registry_location(repo: Path, path: str) -> str:
    if "://" in path:
        return path
    local = Path(path)
    return str(local if local.is_absolute() else repo.resolve() / local)


def _kind(obj: Any) -> str:
    """Feast's object kind as its documentation names it ('feature view', 'feature service', ...)."""
    names = {
        "Entity": "entity",
        "FileSource": "data source",
        "FeatureView": "feature view",
        "OnDemandFeatureView": "on demand feature view",
        "FeatureService": "feature service",
    }
    return names.get(type(obj).__name__, type(obj).__name__)
