"""`servectl features`: the click group; the work is in :mod:`servectl.features.materialize`."""

from datetime import datetime
from pathlib import Path

import click

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
