"""A deliberately bad change to the platform layer, previewed by the real engine and gated as `servectl
deploy` gates it: `python -m tests.servectl.deploy.bad_change CHANGE KUBECONFIG STATE OUT PROJECT` prints the
gate's exit code and its findings as JSON. A process of its own, because the program runs in the process
that drives the engine.

The changes are what no stack file can express (the stacks never write them), made by a resource
transform on top of the no-nodes one, as a hand edit to the stack code would: a privileged serving
container, and the mesh's mTLS relaxed to PERMISSIVE.
"""

import json
import sys
from pathlib import Path
from typing import Any

import pulumi

from servectl.deploy import no_nodes
from servectl.deploy.command import preview_and_gate
from servectl.deploy.workspace import Target, select_stack
from stacks.platform.__main__ import main as platform_program


def _privileged(spec: dict[str, Any]) -> dict[str, Any]:
    changed: dict[str, Any] = json.loads(json.dumps(spec))
    changed["template"]["spec"]["containers"][0].setdefault("securityContext", {})["privileged"] = True
    return changed


def _permissive(spec: dict[str, Any]) -> dict[str, Any]:
    return {**spec, "mtls": {"mode": "PERMISSIVE"}}


CHANGES = {
    "privileged": ("kubernetes:apps/v1:Deployment", "tabular-classifier-v1", _privileged),
    "permissive-mtls": ("kubernetes:security.istio.io/v1:PeerAuthentication", "default", _permissive),
}


def bad(change: str) -> Any:
    kind, name, edit = CHANGES[change]

    def apply(args: pulumi.ResourceTransformArgs) -> pulumi.ResourceTransformResult | None:
        metadata = args.props.get("metadata")
        if args.type_ != kind or not isinstance(metadata, dict) or metadata.get("name") != name:
            return None
        props = dict(args.props)
        props["spec"] = pulumi.Output.from_input(props["spec"]).apply(edit)
        return pulumi.ResourceTransformResult(props=props, opts=args.opts)

    return apply


def main(change: str, kubeconfig: str, state: str, out: str, project: str) -> None:
    target = Target(
        stack="onprem-ae", state=Path(state), kubeconfig=Path(kubeconfig), project_dir=Path(project)
    )
    charts = no_nodes.build_charts(target.state / "no-node-charts")

    def program() -> None:
        pulumi.runtime.register_resource_transform(no_nodes.transform(charts))
        pulumi.runtime.register_resource_transform(bad(change))
        platform_program(unrecorded_digests_allowed=True)

    verdict = preview_and_gate(select_stack(target, program), Path(out), target.project_dir, charts)
    print(
        json.dumps(
            {"code": verdict.code, "denied": [f["id"] for f in verdict.denied], "log": verdict.log[-500:]}
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:6])
