"""`servectl drift report`: a model's input drift over a window, read from Prometheus.

The reading, scores and rendering live in `servectl.drift`; this module only parses options and prints.
"""

import json
import time
from pathlib import Path

import click

from servectl.drift import report as rep
from servectl.drift.source import parse_window, read
from servectl.experiments.promql import Prometheus, PrometheusError


@click.group()
def drift() -> None:
    """Input drift of served models against their training profiles."""


def _window(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        parse_window(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error
    return value.strip()


@drift.command("report")
@click.option("--prometheus", required=True, help="Prometheus base URL, e.g. http://127.0.0.1:9090.")
@click.option("--model", required=True, help="Model name.")
@click.option("--version", "version", help="Only this version (default: every version with drift series).")
@click.option(
    "--window",
    default="1h",
    show_default=True,
    callback=_window,
    help="How far back to compare live inputs with the profile (a Prometheus duration: 30m, 1h, 6h, 1d).",
)
@click.option(
    "--png",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write expected vs live shares of the top 4 features by PSI to this PNG.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
def report_command(
    prometheus: str, model: str, version: str | None, window: str, png: Path | None, as_json: bool
) -> None:
    """Per-feature PSI and Jensen-Shannon distance of live inputs against the training profile.

    Exits 1 when Prometheus cannot be read or holds no drift data for the model in the window; a model
    whose versions carry no valid profile is reported as "drift not monitored".
    """
    prom = Prometheus(prometheus)
    try:
        reading = read(prom, model, version, window, at=time.time())
    except PrometheusError as error:
        raise click.ClickException(str(error)) from error
    what = f"model {model}" + (f" version {version}" if version else "")
    if not reading.versions:
        raise click.ClickException(
            f"no drift series for {what} at {prom.url} in the last {window}: is the server scraped, "
            "serving the model, and SERVING_DRIFT_SAMPLE_RATE above 0?"
        )
    built = rep.build(reading)
    if not built.has_scores:
        reasons = "; ".join(f"version {v.version}: {v.reason}" for v in built.versions)
        raise click.ClickException(f"no drift data for {what} at {prom.url}: {reasons}")
    written = png if png is not None and rep.write_png(built, png) else None
    if as_json:
        click.echo(json.dumps(rep.to_json(built, written), indent=2))
        return
    click.echo(rep.table(built))
    if written is not None:
        click.echo(f"wrote {written}")
    elif png is not None:
        click.echo(f"no PNG: no version of {model} has scores in the window")
