"""`servectl loadtest`: a bounded locust run against a V2 server, with SLO gates and a report folder."""

import sys
from pathlib import Path

import click

from loadtests.drift import BUNDLED_REPOSITORY
from loadtests.profiles import BUNDLED_PROFILES, parse_models
from loadtests.run import LoadTest, run
from loadtests.slo import BUNDLED_SLO


@click.command()
@click.option("--target", default="http://127.0.0.1:8080", show_default=True,
              help="base URL of the V2 REST endpoint")  # fmt: skip
@click.option("--grpc-target", metavar="HOST:PORT",
              help="the V2 gRPC endpoint; without it only REST users run")  # fmt: skip
@click.option("--profile", default="smoke", show_default=True,
              help="profile in the profiles file (smoke, step, ramp, spike, soak, throughput, "
                   "deploy-smoke, smb-smoke, drift)")  # fmt: skip
@click.option("--profiles", "profile_file", type=click.Path(dir_okay=False, path_type=Path),
              default=BUNDLED_PROFILES, show_default=True, help="profiles YAML")  # fmt: skip
@click.option("--slo", "slo_file", type=click.Path(dir_okay=False, path_type=Path), default=BUNDLED_SLO,
              show_default=True, help="SLO gates YAML")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reports/loadtest"),
              show_default=True, help="report folder (CSV, HTML, charts, summary.md)")  # fmt: skip
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="run a locust master and N workers on loopback instead of one process")  # fmt: skip
@click.option("--models", metavar="M1,M2",
              help="load only these of the profile's models (comma-separated); default: all")  # fmt: skip
@click.option("--bearer-token-env", metavar="NAME",
              help="send 'Authorization: Bearer <token>' (gRPC: authorization metadata) with the token read "
                   "from environment variable NAME; never pass the token itself")  # fmt: skip
@click.option("--model-repository", type=click.Path(file_okay=False, path_type=Path),
              default=BUNDLED_REPOSITORY, show_default=True,
              help="the served model repository: the drift profile samples <model>/<version>/profile.json "
                   "from it")  # fmt: skip
def loadtest(
    target: str,
    grpc_target: str | None,
    profile: str,
    profile_file: Path,
    slo_file: Path,
    out: Path,
    workers: int,
    models: str | None,
    bearer_token_env: str | None,
    model_repository: Path,
) -> None:
    """Load-test a V2 server and gate on SLOs.

    Exits 0 when every gate passes, 1 when one fails, 2 on a configuration error, 3 when the run fails.
    """
    test = LoadTest(
        target=target,
        grpc_target=grpc_target,
        profile=profile,
        profile_file=profile_file,
        slo_file=slo_file,
        out=out,
        workers=workers,
        models=parse_models(models) if models is not None else (),
        bearer_token_env=bearer_token_env,
        model_repository=model_repository,
    )
    sys.exit(run(test, lambda line: click.echo(line, err=line.startswith("configuration error"))))
