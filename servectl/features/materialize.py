"""Incremental materialization: load each view's new rows from the offline store into the online store.

Feast's own ``materialize_incremental`` does the work; this module opens the repository, says which interval
each view got (Feast's registry records it, and the serving gauge
``serving_feature_view_materialized_timestamp_seconds`` reads it back), and turns every failure into a
:class:`MaterializeError` naming the file at fault and why, never a traceback.
"""

import contextlib
import io
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving_image.features.repository import FeatureRepoError, one_line, open_store


class MaterializeError(Exception):
    """The materialization cannot run or failed; the message names the file and the reason."""


@dataclass(frozen=True)
class Interval:
    """What one feature view was materialized over."""

    view: str
    start: datetime
    end: datetime
    done: bool = True
    """False when the view was already materialized to ``end`` or later (nothing loaded, nothing recorded:
    an interval ending before the last one would move the freshness gauge backwards)."""


def materialize(repo: Path, end: datetime | None = None) -> list[Interval]:
    """Materialize every online feature view of ``repo`` from its last end (or ``end`` - ttl) to ``end``."""
    until = end if end is not None else datetime.now(UTC)
    try:
        store = open_store(repo)
    except FeatureRepoError as error:
        raise MaterializeError(str(error)) from None
    registry = _local_path(repo, store.config.registry.path)
    if registry is not None and not registry.is_file():
        raise MaterializeError(f"{registry}: no such file; apply the definitions first (make setup)")
    try:
        views = [view for view in store.list_feature_views() if view.online]
    except Exception as error:  # a corrupt registry: protobuf or Feast errors
        raise MaterializeError(f"{registry or repo}: {one_line(error)}") from None
    if not views:
        raise MaterializeError(f"{registry or repo}: no online feature view is registered")
    current = {view.name: view.most_recent_end_time for view in views}
    due = [name for name, last in current.items() if last is None or _utc(last) < _utc(until)]
    if due:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                store.materialize_incremental(end_date=until, feature_views=due)
        except Exception as error:  # Feast, pyarrow and sqlite3 errors alike: name the file at fault
            raise MaterializeError(f"{_blame(repo, store, views, error)}: {one_line(error)}") from None
    return [
        _latest_interval(store, name) if name in due else Interval(name, _utc(last), _utc(last), done=False)
        for name, last in current.items()
        if name in due or last is not None
    ]


def _latest_interval(store: Any, name: str) -> Interval:
    view = store.get_feature_view(name)
    start, end = view.materialization_intervals[-1]
    return Interval(view=name, start=_utc(start), end=_utc(end))


def _blame(repo: Path, store: Any, views: list[Any], error: Exception) -> Path:
    """The file a failed materialization most likely broke on: a missing source, else the online store."""
    for view in views:
        source = getattr(view.batch_source, "path", None)
        path = _local_path(repo, source) if isinstance(source, str) else None
        if path is not None and not path.is_file():
            return path
    online = getattr(store.config.online_store, "path", None)
    if isinstance(error, sqlite3.Error) and isinstance(online, str):
        return _local_path(repo, online) or repo
    return repo


def _local_path(repo: Path, location: str) -> Path | None:
    """A local file named in the config (relative to the repository), or None for a remote one."""
    if "://" in location:
        return None
    path = Path(location)
    return path if path.is_absolute() else repo / path


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def rfc3339(when: datetime) -> str:
    """``2026-11-30T18:00:00Z``: whole seconds, UTC."""
    return _utc(when).replace(microsecond=0).isoformat().replace("+00:00", "Z")
