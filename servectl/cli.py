"""The `servectl` command group.

Each sub-command lives in its own module and depends on the part it drives; the parts
never import servectl.
"""

import click

from servectl.cluster.command import cluster
from servectl.demo import demo
from servectl.deploy.command import deploy
from servectl.drift.command import drift
from servectl.experiment import experiment
from servectl.features.command import features
from servectl.loadtest import loadtest
from servectl.mirror import mirror
from servectl.plan import plan
from servectl.policy import policy
from servectl.publish import publish
from servectl.retrain.command import retrain_command
from servectl.retrain_receiver.command import retrain_receiver
from servectl.serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Plan, check, serve and load-test region-pinned model serving."""


cli.add_command(serve)
cli.add_command(demo)
cli.add_command(plan)
cli.add_command(policy)
cli.add_command(loadtest)
cli.add_command(experiment)
cli.add_command(mirror)
cli.add_command(publish)
cli.add_command(drift)
cli.add_command(retrain_command, name="retrain")
cli.add_command(retrain_receiver)
cli.add_command(features)
cli.add_command(cluster)
cli.add_command(deploy)


def main() -> None:
    """Console-script entry point."""
    cli()
