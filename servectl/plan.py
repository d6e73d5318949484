"""`servectl plan`: the offline plan of a stack's layers, as `pulumi preview --json` would write each."""

import json
from collections import Counter
from pathlib import Path
from typing import Any

import click

from servectl.cost import Item, Line, Load, PriceError, comparison, estimate, load_table, render
from stacks.artifacts import LockError
from stacks.config import ConfigError
from stacks.preview.run import LAYERS, Plan, layers_of, plan_stack, stack_names


def summary(plans: list[Plan]) -> str:
    """Resources by stack and layer, then by type and region (custom resources, providers included)."""
    lines = []
    for plan in plans:
        custom = [r for r in plan.registrations if r.custom]
        steps = len(plan.document["steps"])
        lines.append(f"{plan.stack} {plan.layer}: {steps} steps, {len(custom)} resources")
        counts = Counter((r.type, plan.regions.get(r.urn, "global")) for r in custom)
        lines += [f"  {n:4d}  {region:14s}  {typ}" for (typ, region), n in sorted(counts.items())]
    return "\n".join(lines)


def plan_layers(stack: str, layer: str | None) -> list[Plan]:
    """The plans of one stack: the named layer, or every layer it has; errors as one-line ClickExceptions."""
    layers = [layer] if layer else list(layers_of(stack))
    try:
        return [plan_stack(stack, layer=name) for name in layers]
    except (ConfigError, FileNotFoundError, LockError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


def cost_lines(plan: Plan, load: Load) -> tuple[list[Line], dict[str, Any]]:
    """An infra plan's AWS resources priced per kind, and the table; PriceError as a one-line error."""
    items = [
        Item(
            urn=state["urn"],
            type=state["type"],
            region=plan.regions.get(state["urn"], "global"),
            inputs=state.get("inputs") or {},
            dependencies=tuple(state.get("dependencies") or ()),
        )
        for state in (step["newState"] for step in plan.document["steps"])
    ]
    try:
        table = load_table()
        return estimate(items, table, load), table
    except PriceError as exc:
        raise click.ClickException(str(exc)) from exc


def cost_report(plan: Plan, load: Load, against: Plan | None = None) -> str:
    """The estimated monthly cost of an infra plan's AWS resources; with `against`, the other stack's too and
    what the first saves (or costs) against it at the same load."""
    lines, table = cost_lines(plan, load)
    report = render(plan.stack, lines, table, load)
    if against is None:
        return report
    other, _ = cost_lines(against, load)
    return "\n\n".join(
        [
            report,
            render(against.stack, other, table, load),
            comparison(plan.stack, lines, against.stack, other, load),
        ]
    )


@click.command()
@click.option("--stack", "stack", metavar="NAME", help="Stack to plan (a Pulumi.NAME.yaml file).")
@click.option("--all", "all_stacks", is_flag=True, help="Plan every layer of every stack; print a summary.")
@click.option(
    "--layer",
    type=click.Choice(LAYERS),
    help="The layer to plan: infra (AWS) or platform (Kubernetes). Needed with --out for AWS stacks.",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the plan JSON here.")
@click.option(
    "--cost", is_flag=True, help="Print the infra layer's estimated monthly cost per resource kind."
)
@click.option(
    "--requests", default=Load().requests_per_month, show_default=True, help="--cost: requests/month/model."
)
@click.option(
    "--model-ms", default=Load().model_ms, show_default=True, help="--cost: model time per request (ms)."
)
@click.option(
    "--compare",
    metavar="NAME",
    help="--cost: also price this stack at the same load and say what --stack saves against it.",
)
def plan(
    stack: str | None,
    all_stacks: bool,
    layer: str | None,
    out: Path | None,
    cost: bool,
    requests: int,
    model_ms: float,
    compare: str | None,
) -> None:
    """Run a layer's program under Pulumi's mocks (no cloud, no Pulumi CLI); write its preview JSON."""
    if all_stacks == (stack is not None):
        raise click.UsageError("give exactly one of --stack NAME or --all")
    if cost:
        if stack is None or layer == "platform" or out is not None:
            raise click.UsageError(
                "--cost takes --stack NAME (its infra layer, which holds the AWS resources)"
            )
        against = plan_layers(compare, "infra")[0] if compare else None
        load = Load(requests_per_month=requests, model_ms=model_ms)
        click.echo(cost_report(plan_layers(stack, "infra")[0], load, against))
        return
    if compare is not None:
        raise click.UsageError("--compare goes with --cost")
    names = stack_names() if all_stacks else [str(stack)]
    if not all_stacks and layer is None and len(layers_of(str(stack))) > 1:
        raise click.UsageError(f"stack {stack} has layers {', '.join(layers_of(str(stack)))}: give --layer")
    if out is not None and all_stacks:
        raise click.UsageError("--out takes one plan; with --all, plan each with --stack S --layer L --out F")
    plans = [p for name in names for p in plan_layers(name, None if all_stacks else layer)]
    if all_stacks:
        click.echo(summary(plans))
        return
    document = json.dumps(plans[0].document, indent=4, sort_keys=False)
    if out is not None:
        out.write_text(document + "\n")
        click.echo(f"wrote {out} ({len(plans[0].document['steps'])} steps)", err=True)
    else:
        click.echo(document)
