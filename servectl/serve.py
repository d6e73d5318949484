"""`servectl serve`: the serving image's own entry point, so both take the same flags."""

import sys

import click


@click.command(
    context_settings={
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
        "help_option_names": [],
    }
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def serve(args: tuple[str, ...]) -> None:
    """Serve a model repository over V2 REST and gRPC (flags as `python -m serving_image --help`)."""
    from serving_image.server import main

    sys.exit(main(list(args)))
