"""The demo's SMB phase: the managed-services profile end to end on one machine.

Plan an `smb-*` stack offline (as `servectl plan` does) and estimate its monthly cost, check the plan with the
policy gate (`servectl policy check`, which runs the real OPA), then serve each production variant of the
plan's SageMaker endpoint as SageMaker would: the serving image started with `serve` on a free loopback port
(SAGEMAKER_BIND_TO_PORT), the variant's version copied where SageMaker puts its model data, the Model's own
environment (SERVING_MODEL_NAME/VERSION), and `GET /ping` and `POST /invocations` (a V2 JSON body) called
over real HTTP.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from servectl.demo import REPO_ROOT, Phase, _free_port, _sample_rows, check_policies, phase

SMB_STACKS = ("smb-eu", "smb-ae")
"""The SMB stacks the demo may plan, in order of preference (the first whose stack file exists)."""
ENTERPRISE_PEERS = {"smb-eu": "eu-prod", "smb-ae": "uae-prod"}
"""The EKS stack of each SMB stack's jurisdiction, priced beside it: what the managed profile saves."""
CONFIG = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
MODEL = "aws:sagemaker/model:Model"


@dataclass(frozen=True)
class Variant:
    """One production variant of the plan's endpoint and the Model behind it."""

    name: str
    model: str
    """SERVING_MODEL_NAME of the variant's Model."""
    version: str
    """SERVING_MODEL_VERSION of the variant's Model."""
    weight: float


def smb_stack(root: Path = REPO_ROOT) -> str:
    """The SMB stack to show: the first of SMB_STACKS with a stack file."""
    for name in SMB_STACKS:
        if (root / f"Pulumi.{name}.yaml").exists():
            return name
    raise click.ClickException(f"no SMB stack file (Pulumi.<{'|'.join(SMB_STACKS)}>.yaml) in {root}")


def variants(document: dict[str, Any]) -> list[Variant]:
    """The production variants of the plan's first endpoint configuration (a real-time one if there is one),
    each joined to its Model by the Model's (auto-)name."""
    states = [step["newState"] for step in document["steps"]]
    configs = sorted(
        (s for s in states if s["type"] == CONFIG), key=lambda s: "asyncInferenceConfig" in s["inputs"]
    )
    if not configs:
        raise click.ClickException("the SMB plan has no SageMaker endpoint configuration")
    models = {s["urn"].rsplit("::", 1)[1]: s["inputs"] for s in states if s["type"] == MODEL}
    found = []
    for v in configs[0]["inputs"]["productionVariants"]:
        named = str(v["modelName"])
        inputs = next(
            (m for name, m in models.items() if named == name or named.startswith(name + "-")), None
        )
        if inputs is None:
            raise click.ClickException(f"variant {v['variantName']}: no Model named {named} in the plan")
        env = inputs["primaryContainer"]["environment"]
        found.append(
            Variant(
                name=str(v["variantName"]),
                model=env["SERVING_MODEL_NAME"],
                version=env["SERVING_MODEL_VERSION"],
                weight=float(v.get("initialVariantWeight", 1)),
            )
        )
    return found


def plan_smb(stack: str, out: Path) -> tuple[Path, dict[str, Any], str]:
    """The stack's infra plan written to `out/<stack>.infra.json`, and its cost estimate (`out/cost.txt`),
    set against its jurisdiction's EKS stack at the same load where that stack's file exists."""
    from servectl.cost import Load
    from servectl.plan import cost_report
    from stacks.preview.run import plan_stack

    out.mkdir(parents=True, exist_ok=True)
    plan = plan_stack(stack, layer="infra")
    path = out / f"{stack}.infra.json"
    path.write_text(json.dumps(plan.document, indent=2) + "\n", encoding="utf-8")
    peer = ENTERPRISE_PEERS.get(stack)
    against = (
        plan_stack(peer, layer="infra") if peer and (REPO_ROOT / f"Pulumi.{peer}.yaml").exists() else None
    )
    cost = cost_report(plan, Load(), against)
    (out / "cost.txt").write_text(cost + "\n", encoding="utf-8")
    return path, plan.document, cost


@contextmanager
def sagemaker_container(model_dir: Path, variant: Variant, log_dir: Path) -> Iterator[str]:
    """`python -m serving_image serve` as SageMaker starts a variant's container, on loopback; its base URL.
    Always stopped with SIGTERM, which must exit 0."""
    port = _free_port()
    env = {
        **os.environ,
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SERVING_HOST": "127.0.0.1",  # serve mode listens on every interface; the demo stays on loopback
        "SERVING_MODEL_REPOSITORY": str(model_dir),  # stands for /opt/ml/model
        "SERVING_GRPC_PORT": str(_free_port()),
        "SERVING_MODEL_NAME": variant.model,
        "SERVING_MODEL_VERSION": variant.version,
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    with (log_dir / "access.log").open("wb") as out, (log_dir / "server.log").open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving_image", "serve"], stdout=out, stderr=err, env=env
        )
        try:
            _wait_for_ping(base, process)
            yield base
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=60)
            if code != 0:
                raise click.ClickException(
                    f"variant {variant.name} did not drain cleanly (exit {code}); see {log_dir}"
                )


def _wait_for_ping(base: str, process: subprocess.Popen[bytes]) -> None:
    import requests

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise click.ClickException(
                f"the container exited with {process.returncode} before /ping answered"
            )
        try:
            if requests.get(base + "/ping", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise click.ClickException("the container did not answer /ping within 60 s")


def invoke_as_sagemaker(base: str, rows: list[list[float]]) -> dict[str, Any]:
    """`GET /ping` and `POST /invocations` with a V2 JSON body, as SageMaker's runtime forwards them."""
    import requests

    ping = requests.get(base + "/ping", timeout=10)
    body = {
        "inputs": [{"name": "features", "shape": [len(rows), len(rows[0])], "datatype": "FP32", "data": rows}]
    }
    # SageMaker's runtime passes InvokeEndpoint's body bytes and ContentType through unchanged.
    raw, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
    answer = requests.post(base + "/invocations", data=raw, headers=headers, timeout=30)
    outputs = {o["name"]: o["data"] for o in answer.json().get("outputs", [])} if answer.ok else {}
    return {
        "ping": ping.status_code,
        "status": answer.status_code,
        "served_version": answer.headers.get("x-model-version"),
        "labels": outputs.get("label"),
        "error": None if answer.ok else answer.text[:300],
    }


def serve_variants(found: list[Variant], repository: Path, out: Path) -> dict[str, dict[str, Any]]:
    """Each variant in its own container, called as SageMaker would; what each answered."""
    rows = _sample_rows(4)
    answers = {}
    for variant in found:
        source = repository / variant.model / variant.version / "model.onnx"
        if not source.exists():
            raise click.ClickException(f"variant {variant.name}: no {source} to serve (run `make models`)")
        model_dir = out / f"opt-ml-model-{variant.name}"  # SageMaker copies the version's prefix here
        model_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, model_dir / "model.onnx")
        with sagemaker_container(model_dir, variant, out / f"logs-{variant.name}") as base:
            answer = invoke_as_sagemaker(base, rows)
        click.echo(
            f"    variant {variant.name} ({variant.model} v{variant.version}, weight {variant.weight:g}): "
            f"/ping {answer['ping']}, /invocations {answer['status']} "
            f"from version {answer['served_version']}, labels {answer['labels']}"
        )
        answers[variant.name] = answer
    return answers


def served_as_planned(found: list[Variant], answers: dict[str, dict[str, Any]]) -> bool:
    """Every variant answered /ping and /invocations with 200, from the version its Model names."""
    return bool(found) and all(
        answers[v.name]["ping"] == 200
        and answers[v.name]["status"] == 200
        and answers[v.name]["served_version"] == v.version
        for v in found
    )


def smb_phases(repository: Path, out: Path, phases: list[Phase]) -> dict[str, Any]:
    """The SMB phases: plan and cost, policy gate, SageMaker-mode serving; their results for the report."""
    stack = smb_stack()
    with phase(f"SMB: plan {stack} offline (managed services, no cluster) and its monthly cost", phases):
        path, document, cost = plan_smb(stack, out)
        shown = cost.splitlines()[:8] + (["", *cost.split("\n\n")[-1].splitlines()] if "\n\n" in cost else [])
        click.echo("\n".join("    " + line for line in shown))
    with phase(f"SMB: policy gate on {stack} (real OPA server)", phases) as gate:
        code, findings = check_policies([path], out / "policy")
        gate.result = {0: "PASS", 1: "FAIL"}.get(code, "error")
    with phase(
        f"SMB: serve {stack}'s variants in SageMaker mode, call /ping and /invocations", phases
    ) as served:
        found = variants(document)
        answers = serve_variants(found, repository, out)
        served.result = "PASS" if served_as_planned(found, answers) else "FAIL"
    return {
        "stack": stack,
        "policy_code": code,
        "policy": findings.get("summary", {"error": f"exit {code}"}),
        "variants": [vars(v) for v in found],
        "answers": answers,
        "cost": cost,
        "passed": code == 0 and served.result == "PASS",
    }
