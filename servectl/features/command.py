"""`servectl features`: the click group; the work is in :mod:`servectl.features.materialize`."""

from datetime import datetime
from pathlib import Path

import click

from servectl.features.apply import ApplyError, apply
from servectl.features.materialize import MaterializeError, materialize, rfc3339
from serving_image.features.repository import DEFAULT_REPO


def _end(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an RFC 3339 time (e.g. 2026-11-30T18:00:00Z)") from None
    if when.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no UTC offset; add Z or +HH:MM")
    return when


@click.group()
def features() -> None:
    """Drive the feature repository (docs/features.md)."""


@features.command(name="materialize")
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_REPO,
    show_default=True,
    help="Feature repository: a directory holding feature_store.yaml.",
)
@click.option(
    "--end", callback=_end, metavar="RFC3339",
    help="Materialize up to this time [default: now].",
)  # fmt: skip
def materialize_command(repo: Path, end: datetime | None) -> None:
    """Load each feature view's rows since its last materialization into the online store (Feast's
    incremental materialization) and print the interval each view got. Exit 1 naming the file on failure."""
    try:
        intervals = materialize(repo, end)
    except MaterializeError as error:
        click.echo(f"servectl features materialize: {error}", err=True)
        raise SystemExit(1) from None
    for interval in intervals:
        if interval.done:
            click.echo(f"{interval.view}: materialized {rfc3339(interval.start)} .. {rfc3339(interval.end)}")
        else:
            click.echo(f"{interval.view}: already materialized to {rfc3339(interval.end)}; nothing to do")


@features.command(name="apply")
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_REPO,
    show_default=True,
    help="Directory holding the feature_store.yaml whose registry and online store to apply to.",
)
@click.option(
    "--definitions",
    "definitions_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_REPO,
    show_default=True,
    help="Directory holding the Feast definitions (*.py); the package's own repository by default.",
)
@click.option(
    "--offline-root", metavar="URI",
    help="Where the sources' data/ files are, e.g. s3://BUCKET/features/ [default: data/ in --repo].",
)  # fmt: skip
def apply_command(repo: Path, definitions_dir: Path, offline_root: str | None) -> None:
    """Register the feature definitions in the registry --repo's feature_store.yaml names (Feast's apply:
    idempotent; existing online store tables are left alone). Exit 1 naming the file on failure."""
    try:
        applied = apply(repo, definitions_dir, offline_root)
    except ApplyError as error:
        click.echo(f"servectl features apply: {error}", err=True)
        raise SystemExit(1) from None
    for kind, name in applied.objects:
        click.echo(f"{kind} {name}")
    for name, path in applied.sources:
        click.echo(f"data source {name} reads {path}")
    click.echo(f"applied {len(applied.objects)} objects to {applied.registry}")
