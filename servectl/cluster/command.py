"""`servectl cluster up|down|status`: the local control plane as a command. Parsing and printing only; the
work is in `controlplane` and `lifecycle`.

The default directory is `.tools/cluster` in this checkout, beside the binaries it runs: two checkouts on
one machine get two clusters rather than fighting over one, and `git clean`/`make clean` users know .tools
holds machine state. (Run `down` before `make clean`: removing the state file leaves the processes running
with nothing recording them.)
"""

import sys
from pathlib import Path

import click

from servectl.cluster.controlplane import TOOLS, Binaries, ClusterError, up
from servectl.cluster.lifecycle import RUNNING, STOPPED, down, status
from servectl.cluster.state import OWNED, Layout, StateError

DEFAULT_DIR = TOOLS / "cluster"

_dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    help="State directory: pids, logs, certificates, etcd data, the kubeconfig.",
)


@click.group()
def cluster() -> None:
    """A local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) on 127.0.0.1."""


def _progress(message: str) -> None:
    click.echo(message, err=True)


def _refuse_leftovers(layout: Layout) -> None:
    """An earlier control plane's files (stopped, half up, or an `up` that died) are never reused or
    overwritten: its etcd data may matter to someone. `down` removes them. Logs alone (what a failed
    `up` keeps) are replaced."""
    leftovers = [name for name in OWNED if name != "logs" and (layout.root / name).exists()]
    if leftovers:
        raise click.ClickException(
            f"{layout.root} holds an earlier control plane ({', '.join(leftovers)}) that is not running: "
            f"run `servectl cluster down --dir {layout.root}` first (it deletes that cluster's etcd data)"
        )


@cluster.command("up")
@_dir_option
@click.option("--port", type=click.IntRange(1, 65535), help="kube-apiserver's port (default: a free one).")
def up_command(directory: Path, port: int | None) -> None:
    """Start the control plane, wait until it is ready, write a kubeconfig and print its path.

    The processes keep running after the command returns; `servectl cluster down` stops them. Running
    `up` again while the cluster is up prints where it is and exits 0, so a script can say "make sure
    it is up" without first asking. A half-up or stopped cluster's leftovers make `up` exit 1: run
    `down` first. Any failed step stops what was started and exits 1 naming the process and its log.
    """
    layout = Layout(directory.resolve())
    try:
        found = status(layout)
    except StateError as error:
        raise click.ClickException(f"{error}: run `servectl cluster down --dir {layout.root}`") from error
    if found.state == RUNNING:
        click.echo(f"already running at {found.url}")
        click.echo(f"kubeconfig: {found.kubeconfig}")
        return
    _refuse_leftovers(layout)
    _progress(f"starting a control plane in {layout.root}")
    try:
        started = up(layout, Binaries.installed(), port=port, progress=_progress)
    except ClusterError as error:
        raise click.ClickException(f"cluster up failed, everything it started is stopped: {error}") from error
    click.echo(f"running at {started.url}")
    click.echo(f"kubeconfig: {started.kubeconfig}")


@cluster.command("status")
@_dir_option
def status_command(directory: Path) -> None:
    """Say whether the control plane runs, where, and each process; exit 0 running, 1 half up, 3 stopped."""
    layout = Layout(directory.resolve())
    try:
        found = status(layout)
    except StateError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{found.state}: {found.reason}")
    if found.url:
        click.echo(f"url: {found.url}")
        click.echo(f"kubeconfig: {found.kubeconfig}")
    for record, running in found.processes:
        click.echo(
            f"  {record.name}: pid {record.pid} {'running' if running else 'stopped'} (log {record.log})"
        )
    if found.state == STOPPED and found.url:
        click.echo(f"run `servectl cluster down --dir {layout.root}` to remove its files")
    sys.exit(found.exit_code)


@cluster.command("down")
@_dir_option
def down_command(directory: Path) -> None:
    """Stop every process (SIGTERM, a bounded wait, then SIGKILL) and remove the state directory's files."""
    layout = Layout(directory.resolve())
    try:
        left = down(layout)
    except StateError as error:
        raise click.ClickException(
            f"{error}; stop its processes by hand, then delete {layout.root}"
        ) from error
    if left:
        pids = ", ".join(f"{r.name} pid {r.pid}" for r in left)
        raise click.ClickException(f"still running after SIGKILL: {pids}; state kept in {layout.root}")
    click.echo(f"stopped; removed the control plane's files from {layout.root}")
