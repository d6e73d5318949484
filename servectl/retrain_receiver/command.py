"""`servectl retrain-receiver`: serve the Alertmanager webhook that starts retrains.

The payload handling, the runner and the HTTP server live in `servectl.retrain_receiver`; this module
only parses options and serves until interrupted.
"""

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from servectl.retrain_receiver.config import ConfigError, load_config
from servectl.retrain_receiver.runner import JsonLog, Runner
from servectl.retrain_receiver.server import ReceiverServer


def _address(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


@click.command("retrain-receiver")
@click.option(
    "--listen",
    default="127.0.0.1:9095",
    show_default=True,
    callback=_address,
    help="HOST:PORT to listen on (0.0.0.0:PORT in a pod).",
)
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file: per model the labelled data URI, and the retrain command (default `servectl retrain`).",
)
def retrain_receiver(listen: tuple[str, int], config_path: Path) -> None:
    """Alertmanager webhook receiver: POST /alerts; runs the retrain command for each firing
    ModelInputDriftCritical or ModelQualityDrop alert of a configured model, one at a time per model.

    Logs every alert it ignores and every run (exit code and outcome) as JSON lines on stdout.
    """
    try:
        config = load_config(config_path)
    except ConfigError as error:
        raise click.ClickException(str(error)) from error
    log = JsonLog()
    runner = Runner(config, log)
    server = ReceiverServer(listen, runner, log, frozenset(config.models))
    log("receiver_listening", address=f"{listen[0]}:{server.server_address[1]}", models=sorted(config.models))

    def stop(_signum: int, _frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return, so not from the thread that runs it.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        # A run in progress dies with the process (the pod's end); the alert's next repeat starts it
        # again unless the retrain command had recorded its trigger key.
        log("receiver_stopped", interrupted=runner.status())
