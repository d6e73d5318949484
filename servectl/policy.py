"""`servectl policy check`: the policy gate on Pulumi plans, through a real OPA server."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click

from policies.normalize import PlanError, load_plan
from policies.opa import Endpoint, Gate, OpaError, local_server
from policies.report import PlanResult, exit_code, render

EXIT_USAGE = 2


@click.group()
def policy() -> None:
    """Check Pulumi plans against the residency and security rules in policies/."""


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    # SIGTERM (CI cancelling a job) unwinds like Ctrl-C, so the OPA server is stopped too.
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _endpoint(opa_url: str | None, opa_bin: Path | None, data: tuple[Path, ...]) -> Iterator[Endpoint]:
    if opa_url:
        yield Endpoint.parse(opa_url)
        return
    with local_server(opa_bin, data) as endpoint:
        yield endpoint


@policy.command()
@click.argument("plans", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--opa-url", help="Use this OPA server (loaded with policies/) instead of starting one.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "sarif"]),
    default="text",
    show_default=True,
    help="Report format.",
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the report here, not stdout."
)
@click.option(
    "--data",
    "data",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='An organisation override file ({"overrides": {...}}) for the local server; repeatable.',
)
@click.option(
    "--project-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where Pulumi.<stack>.yaml lives, for the jurisdiction when a plan lacks its config.",
)
@click.option(
    "--opa-bin",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The OPA binary (default .tools/bin/opa).",
)
def check(
    plans: tuple[Path, ...],
    opa_url: str | None,
    fmt: str,
    out: Path | None,
    data: tuple[Path, ...],
    project_dir: Path,
    opa_bin: Path | None,
) -> None:
    """Check PLANS (`pulumi preview --json` or `pulumi stack export` files).

    Exits 1 if any finding is not waived, 2 if a plan cannot be read or OPA fails, else 0.
    """
    try:
        if opa_url and data:
            raise click.UsageError(
                "--data applies to the local OPA server; load overrides into yours instead"
            )
        inputs = [(str(p), load_plan(p, project_dir)) for p in plans]
        with _terminate_as_interrupt(), _endpoint(opa_url, opa_bin, data) as endpoint, Gate(endpoint) as gate:
            results = [PlanResult(path=path, result=gate.evaluate(doc)) for path, doc in inputs]
    except (PlanError, OpaError, ValueError) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_USAGE)
    report = render(results, fmt)
    if out:
        out.write_text(report + "\n", encoding="utf-8")
        click.echo(f"wrote {fmt} report for {len(results)} plan(s) to {out}", err=True)
    else:
        click.echo(report)
    sys.exit(exit_code(results))
