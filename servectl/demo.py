"""`servectl demo`: serve the bundled models and show the platform answering real requests.

The demo grows as the parts land (plans, policy gate, load test); each phase prints its
progress and duration, and anything it starts is stopped again, also on error.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

BUNDLED_MODELS = Path(__file__).resolve().parents[1] / "serving_image" / "models"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def phase(title: str) -> Iterator[None]:
    """Print a phase's start and how long it took."""
    click.secho(f"==> {title}", bold=True)
    started = time.monotonic()
    yield
    click.echo(f"    done in {time.monotonic() - started:.1f} s")


@contextmanager
def running_server(repository: Path, log_dir: Path) -> Iterator[tuple[str, str]]:
    """The serving image as a process on loopback; always stopped with SIGTERM, which must exit 0."""
    http_port, grpc_port = _free_port(), _free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "serving_image", "--model-repository", str(repository),
               "--http-port", str(http_port), "--grpc-port", str(grpc_port)]  # fmt: skip
    with (log_dir / "access.log").open("wb") as out, (log_dir / "server.log").open("wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err)
        try:
            _wait_ready(f"http://127.0.0.1:{http_port}", process)
            yield f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=60)
            click.echo(f"    server stopped with exit code {code}")
            if code != 0:
                raise click.ClickException(f"server did not drain cleanly (exit {code}); see {log_dir}")


def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    import requests

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise click.ClickException(f"server exited with {process.returncode} before it was ready")
        try:
            if requests.get(base + "/v2/health/ready", timeout=1).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise click.ClickException("server did not become ready within 60 s")


def _sample_rows(count: int) -> list[list[float]]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer().data[::97][:count]  # spread over the set, so both classes show
    return [[float(value) for value in row] for row in data]


def send_requests(http_url: str, grpc_url: str) -> dict[str, object]:
    """A few real V2 requests over REST and gRPC with the official clients; what they show."""
    import numpy as np
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    rows = np.asarray(_sample_rows(5), dtype=np.float32)
    rest = httpclient.InferenceServerClient(http_url)
    metadata = rest.get_model_metadata("tabular-classifier")
    click.echo(f"    model metadata: inputs {metadata['inputs']}, versions {metadata['versions']}")
    tensor = httpclient.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = rest.infer("tabular-classifier", [tensor], model_version="2")
    click.echo(f"    REST  v2 labels for 5 rows: {result.as_numpy('label').tolist()}")

    grpc = grpcclient.InferenceServerClient(grpc_url)
    gtensor = grpcclient.InferInput("features", list(rows.shape), "FP32")
    gtensor.set_data_from_numpy(rows)
    gresult = grpc.infer("tabular-classifier-int8", [gtensor])
    click.echo(f"    gRPC  int8 labels for 5 rows: {gresult.as_numpy('label').tolist()}")

    split: Counter[str] = Counter()
    one = httpclient.InferInput("features", [1, rows.shape[1]], "FP32")
    one.set_data_from_numpy(rows[:1])
    for user in range(200):
        response = rest.infer("tabular-classifier", [one], headers={"x-user-id": f"user-{user}"})
        split[response.get_response()["model_version"]] += 1
    click.echo(f"    variant split for 200 sticky users (configured 90/10): {dict(sorted(split.items()))}")

    bad = httpclient.InferInput("features", [1, 3], "FP32")
    bad.set_data_from_numpy(rows[:1, :3])
    try:
        rest.infer("tabular-classifier", [bad])
        error = "none (unexpected)"
    except InferenceServerException as raised:
        error = str(raised.message())
    click.echo(f"    a bad request is refused with: {error}")
    return {"metadata": metadata, "variant_split": dict(split), "bad_request_error": error}


@click.command()
@click.option("--models", "repository", type=click.Path(path_type=Path), default=BUNDLED_MODELS,
              show_default=True, help="model repository to serve")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/demo"), show_default=True,
              help="folder for the demo's report and server logs")  # fmt: skip
def demo(repository: Path, out: Path) -> None:
    """Run the platform offline: serve the bundled models and send real requests."""
    if not (repository / "tabular-classifier").is_dir():
        raise click.ClickException(f"no models in {repository}: run `make models` first")
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, object] = {}
    with (
        phase("serve the bundled models and send real requests"),
        running_server(repository, out / "server") as (http_url, grpc_url),
    ):
        summary["serving"] = send_requests(http_url, grpc_url)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    click.secho(f"demo report: {os.path.abspath(out)}", fg="green")
