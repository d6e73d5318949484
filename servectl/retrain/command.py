"""`servectl retrain`: the click command; the work is in :mod:`servectl.retrain.run`."""

import json
from pathlib import Path

import click

from servectl.retrain.run import Request, retrain
from serving_image.features.repository import DATA_DIR, LABELS_FILE
from serving_image.features.repository import DEFAULT_REPO as DEFAULT_FEATURE_REPO

DEFAULT_STATE = ".servectl/retrain"
DEFAULT_REPOSITORY = Path(__file__).resolve().parents[2] / "serving_image" / "models"


@click.command()
@click.option("--model", required=True, help="Model to retrain (a directory of the repository).")
@click.option(
    "--data", "uri", metavar="URI",
    help="Labelled CSV, a path or s3://BUCKET/KEY: features in profile order, label, optional timestamp. "
    "With --feature-service: the labels parquet (patient_id, event_timestamp, label) "
    "[default: the feature repository's data/labels.parquet].",
)  # fmt: skip
@click.option(
    "--feature-service", metavar="NAME",
    help="Read the rows through this feature service instead (Feast's point-in-time join on the labels' "
    "times, docs/features.md); the new version records it in its metadata and model card.",
)  # fmt: skip
@click.option(
    "--feature-repo", type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=DEFAULT_FEATURE_REPO, show_default=True,
    help="Feature repository for --feature-service (a directory with feature_store.yaml).",
)  # fmt: skip
@click.option(
    "--repository",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=DEFAULT_REPOSITORY,
    show_default=True,
    help="Local model repository: the serving version is read and the new one published here.",
)
@click.option(
    "--margin", type=click.FloatRange(min=0), default=0.01, show_default=True,
    help="Refuse when accuracy is lower, or log loss higher, than the serving version's by more than this.",
)  # fmt: skip
@click.option("--trigger", metavar="KEY", help="Idempotency key (e.g. the alert): a handled key is skipped.")
@click.option(
    "--state", type=click.Path(file_okay=False, path_type=Path),
    help=f"State directory (handled triggers, last run) [default: {DEFAULT_STATE} under the repository].",
)  # fmt: skip
@click.option(
    "--min-interval", type=click.FloatRange(min=0), default=3600.0, show_default=True, metavar="SECONDS",
    help="Rate limit: at most one retrain of a model per this many seconds.",
)  # fmt: skip
@click.option(
    "--server-pid", type=click.IntRange(min=1), metavar="PID",
    help="A running server on --repository: after publishing, send it SIGHUP so it loads the version "
    "and applies the canary weights.",
)  # fmt: skip
@click.option(
    "--publish-bucket", "publish_buckets", multiple=True, metavar="s3://BUCKET[/PREFIX]",
    help="Model bucket (repeatable; PREFIX defaults to models): the serving version is read from the first, "
    "the new one published to every one, and no canary started (the cluster's weights are the stack's).",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def retrain_command(
    model: str,
    uri: str | None,
    feature_service: str | None,
    feature_repo: Path,
    repository: Path,
    margin: float,
    trigger: str | None,
    state: Path | None,
    min_interval: float,
    server_pid: int | None,
    publish_buckets: tuple[str, ...],
    as_json: bool,
) -> None:
    """Retrain MODEL from labelled data (a CSV, or the feature store's rows for the labels), refuse it if
    worse than the serving version, else publish N+1.

    Exit status: 0 published, 3 refused (worse beyond the margin), 4 skipped (trigger handled, rate limit,
    or a retrain of the model running), 2 bad data or arguments, 1 any other failure.
    """
    if server_pid is not None and publish_buckets:
        raise click.UsageError("--server-pid is for a local server; --publish-bucket starts no canary")
    if uri is None and feature_service is None:
        raise click.UsageError(
            "give --data (a labelled CSV) or --feature-service (rows from the feature store)"
        )
    if uri is None:
        uri = str(feature_repo / DATA_DIR / LABELS_FILE)
    request = Request(
        model=model,
        data=uri,
        feature_service=feature_service,
        feature_repo=feature_repo,
        repository=repository,
        state=state if state is not None else repository / DEFAULT_STATE,
        margin=margin,
        trigger=trigger,
        min_interval=min_interval,
        server_pid=server_pid,
        publish_buckets=publish_buckets,
    )
    outcome = retrain(request)
    if as_json:
        click.echo(json.dumps(outcome.to_json(), sort_keys=True))
    else:
        stream_err = outcome.code not in {0, 4}
        click.echo(f"retrain {model}: {outcome.outcome}: {outcome.reason}", err=stream_err)
        for name, values in outcome.metrics.items():
            click.echo(f"  {name}: {json.dumps(values, sort_keys=True)}", err=stream_err)
    raise SystemExit(outcome.code)
