"""`servectl deploy --stack S`: the platform layer with the real Pulumi engine, gated before it changes
anything.

The program is the platform layer's own (`stacks/platform/__main__.py`, what `pulumi up` runs there), run
inline through the Automation API by the pinned CLI (servectl/engine.py). Every deploy is a `preview`
first, whose JSON document goes through the policy gate; a finding that is not waived stops it (exit 1)
before `up`. `--destroy` removes what the stack deployed.

Who runs what (servectl/deploy/addons.py): a cluster admin deploys the add-ons (`--addons`: the Helm
releases and what they need); the platform deployer, holding only stacks/manifests/deployer_rbac.py's role,
everything else. A deployer's run that would change an add-on is a HOLD (exit 3) before anything changes.
"""

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from pulumi import automation as auto

from servectl.deploy import addons, gate, no_nodes
from servectl.deploy.workspace import ROOT, Target, Workspace, WorkspaceError, select_stack, state_dir
from servectl.engine import EngineError
from stacks.preview.run import layers_of

EXIT_DENIED = 1
EXIT_FAILED = 2
EXIT_HOLD = 3


def command_line(
    stack: str, kubeconfig: Path, state: Path, out: Path, *args: str, project_dir: Path | None = None
) -> list[str]:
    """`servectl deploy` into a cluster without nodes (`servectl cluster up`), as a process: what the demo
    and the real-engine tests run."""
    return [sys.executable, "-m", "servectl", "deploy", "--stack", stack, "--no-nodes", "--kubeconfig",
            str(kubeconfig), "--state", str(state), "--out", str(out),
            *(["--project-dir", str(project_dir)] if project_dir else []), *args]  # fmt: skip


def program(no_node_charts: dict[str, Path] | None) -> auto.PulumiFn:
    """The platform layer's program; with `no_node_charts`, under the no-nodes transform."""

    def run() -> None:
        # Imported here: the layer's components need the cloud SDKs, which the images that run other
        # servectl commands (the retrain image) do not carry.
        import pulumi

        from stacks.platform.__main__ import main as platform_program

        if no_node_charts is not None:
            pulumi.runtime.register_resource_transform(no_nodes.transform(no_node_charts))
        platform_program(unrecorded_digests_allowed=no_node_charts is not None)

    return run


def preview_and_gate(
    stack: auto.Stack,
    out: Path,
    project_dir: Path,
    charts: dict[str, Path] | None = None,
    refresh: bool = False,
) -> gate.Verdict:
    """The real preview's JSON document in `out/platform.preview.json`, and the gate's verdict on it; with
    the no-nodes stand-in `charts`, their releases' RES-007 findings waived for this run, reported as such."""
    out.mkdir(parents=True, exist_ok=True)
    workspace = stack.workspace
    if not isinstance(workspace, Workspace):
        raise TypeError("the stack must come from select_stack (its workspace passes --show-sames)")
    workspace.extra_args = ("--show-sames",)
    try:
        preview = stack.preview(json=True, diff=False, refresh=refresh)
    finally:
        workspace.extra_args = ()
    document = out / "platform.preview.json"
    document.write_text(preview.stdout, encoding="utf-8")
    overrides = None
    if charts is not None:
        waivers = no_nodes.stand_in_waivers(json.loads(preview.stdout), charts)
        overrides = out / "no-nodes-waivers.json"
        overrides.write_text(json.dumps({"overrides": {"waivers": waivers}}, indent=2), encoding="utf-8")
    return gate.check(document, out / "platform.findings.json", project_dir, overrides)


@click.command()
@click.option("--stack", "stack_name", required=True, metavar="NAME", help="The stack (Pulumi.NAME.yaml).")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The cluster to deploy into (default: KUBECONFIG, as the stack file says).")  # fmt: skip
@click.option("--preview", "preview_only", is_flag=True, help="Preview and gate only; change nothing.")
@click.option(
    "--destroy",
    is_flag=True,
    help="Remove what the stack deployed: all but the add-ons; with --addons, everything left.",
)
@click.option(
    "--addons",
    "addons_only",
    is_flag=True,
    help="The cluster add-ons only (Helm releases and what they need): run by a cluster admin.",
)
@click.option(
    "--refresh", is_flag=True, help="Read the cluster's objects into the state first: drift shows as changes."
)
@click.option(
    "--state",
    type=click.Path(file_okay=False, path_type=Path),
    help="State directory (default: the stack file's model-serving:state file:// backend).",
)
@click.option(
    "--no-nodes",
    "without_nodes",
    is_flag=True,
    help="The cluster runs no nodes (servectl cluster up): nothing awaits pods; charts are their CRDs.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports/deploy"),
    show_default=True,
    help="Where the preview document and the gate's findings are written.",
)
@click.option(
    "--project-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=ROOT,
    help="Where the stack files are (default: the repository root).",
)
def deploy(
    stack_name: str,
    kubeconfig: Path | None,
    preview_only: bool,
    destroy: bool,
    addons_only: bool,
    refresh: bool,
    state: Path | None,
    without_nodes: bool,
    out: Path,
    project_dir: Path,
) -> None:
    """Deploy a stack's platform layer with the real engine: preview, policy gate, then up."""
    if "platform" not in layers_of(stack_name):
        raise click.UsageError(f"stack {stack_name} has no platform layer (an smb stack is infra only)")
    try:
        state = state or state_dir(stack_name, project_dir)
        target = Target(stack=stack_name, state=state, kubeconfig=kubeconfig, project_dir=project_dir)
        charts = no_nodes.build_charts(target.state / "no-node-charts") if without_nodes else None
        stack = select_stack(target, program(charts))
    except (WorkspaceError, EngineError, no_nodes.NoNodesError) as exc:
        raise click.ClickException(str(exc)) from exc
    started = time.monotonic()
    try:
        if destroy:
            _destroy(stack, stack_name, addons_only)
            click.echo(f"destroyed in {time.monotonic() - started:.1f} s")
            return
        verdict = preview_and_gate(stack, out, target.project_dir, charts, refresh)
        click.echo(f"preview: {out / 'platform.preview.json'}; gate exit {verdict.code}: {verdict.summary()}")
        if verdict.code != 0:
            click.echo("\n".join(f"  {line}" for line in verdict.lines()), err=True)
            click.echo(f"deploy of {stack_name} stopped by the policy gate before any change", err=True)
            sys.exit(EXIT_DENIED if verdict.code == EXIT_DENIED else EXIT_FAILED)
        preview = json.loads((out / "platform.preview.json").read_text(encoding="utf-8"))
        part = _part(preview, stack_name, addons_only)
        if addons_only:
            rbac = out / "deployer-rbac.yaml"
            rbac.write_text(addons.deployer_rbac_yaml(preview), encoding="utf-8")
            click.echo(f"the deployer's ClusterRole and binding for this plan: {rbac} (kubectl apply -f it)")
        if preview_only:
            return
        result = stack.up(on_output=_echo, refresh=refresh, target=part)
        exported = stack.export_stack()
        document = {"version": exported.version, "deployment": exported.deployment}
        (out / "platform.export.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
        changes = ", ".join(f"{op} {n}" for op, n in sorted((result.summary.resource_changes or {}).items()))
        what = "add-ons" if addons_only else "platform layer"
        click.echo(f"deployed {stack_name}'s {what} in {time.monotonic() - started:.1f} s: {changes}")
    except auto.errors.CommandError as exc:
        click.echo(f"error: the engine failed: {str(exc).strip()[-2000:]}", err=True)
        sys.exit(EXIT_FAILED)


def _part(preview: dict[str, Any], stack_name: str, addons_only: bool) -> list[str] | None:
    """What `up` targets: with --addons the add-ons' URNs; otherwise everything (None), once the add-ons
    are as the stack says (else a HOLD, exit 3, naming the releases)."""
    if addons_only:
        return sorted(addons.closure(addons.planned_states(preview)))
    changed = addons.changed_addons(preview)
    if changed:
        click.echo(
            f"HOLD: the add-ons are not as the stack says ({'; '.join(changed)}): a cluster admin runs "
            f"`servectl deploy --stack {stack_name} --addons` first; nothing was changed",
            err=True,
        )
        sys.exit(EXIT_HOLD)
    return None


def _destroy(stack: auto.Stack, stack_name: str, addons_only: bool) -> None:
    """The deployer's destroy leaves the add-ons (and the state's stack and providers); the admin's
    (--addons) removes everything left."""
    if addons_only:
        stack.destroy(on_output=_echo)
        click.echo(f"destroyed what was left of {stack_name}'s platform layer, add-ons included")
        return
    part = addons.deployer_part(stack.export_stack().deployment or {})
    if part:
        stack.destroy(on_output=_echo, target=part)
    click.echo(
        f"destroyed {stack_name}'s platform layer but its add-ons ({len(part)} resources); a cluster admin "
        f"removes those with `servectl deploy --stack {stack_name} --destroy --addons`"
    )


def _echo(line: str) -> None:
    click.echo(line.rstrip("\n"))
