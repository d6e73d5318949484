"""`servectl plan`: the offline plan of a stack, as `pulumi preview --json` would write it."""

import json
from collections import Counter
from pathlib import Path

import click

from stacks.config import ConfigError
from stacks.preview.run import Plan, plan_stack, stack_names


def summary(plans: list[Plan]) -> str:
    """Resources by stack, then by type and region (custom resources only; providers count as resources)."""
    lines = []
    for plan in plans:
        custom = [r for r in plan.registrations if r.custom]
        lines.append(f"{plan.stack}: {len(plan.document['steps'])} steps, {len(custom)} resources")
        counts = Counter((r.type, plan.regions.get(r.urn, "global")) for r in custom)
        lines += [f"  {n:4d}  {region:14s}  {typ}" for (typ, region), n in sorted(counts.items())]
    return "\n".join(lines)


@click.command()
@click.option("--stack", "stack", metavar="NAME", help="Stack to plan (a Pulumi.NAME.yaml file).")
@click.option("--all", "all_stacks", is_flag=True, help="Plan every stack and print a summary.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the plan JSON here.")
def plan(stack: str | None, all_stacks: bool, out: Path | None) -> None:
    """Run the Pulumi program under mocks (no cloud account, no Pulumi CLI) and write the preview JSON."""
    if all_stacks == (stack is not None):
        raise click.UsageError("give exactly one of --stack NAME or --all")
    names = stack_names() if all_stacks else [str(stack)]
    if out is not None and len(names) != 1:
        raise click.UsageError(
            "--out takes one stack; with --all, plan each stack with --stack NAME --out FILE"
        )
    plans = []
    for name in names:
        try:
            plans.append(plan_stack(name))
        except (ConfigError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc)) from exc
    document = json.dumps(plans[0].document, indent=4, sort_keys=False)
    if out is not None:
        out.write_text(document + "\n")
        click.echo(f"wrote {out} ({len(plans[0].document['steps'])} steps)", err=True)
    elif not all_stacks:
        click.echo(document)
    if all_stacks:
        click.echo(summary(plans))
