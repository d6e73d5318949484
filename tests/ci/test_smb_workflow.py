"""The smb pipeline (.github/workflows/smb.yml): preview + gate, approval, infra with the serving image pushed
before SageMaker creates a Model, and the smoke test of the public API.

The workflow is parsed as YAML and checked rule by rule, and its scripts run for real: the stack reader on
the shipped smb stack files and on broken ones, the targeted `up` of the image repository (with a stand-in
`pulumi` that records its arguments) on the plans `servectl plan` writes for the shipped smb stacks, the
API address check and the smoke test's command line against `servectl loadtest`. What the plans prove that
reading the YAML cannot: the first `up` names the repository the Models pull from and none of the Models,
and everything Pulumi needs to create it, so the push between the two `up`s lands before any CreateModel.
"""

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ci.conftest import BASH, ROOT, executable, plain_env, run_script, runs, step_named, workflow
from tests.ci.test_images import built, push_env
from tests.ci.test_workflows import ancestors, first, smb_stacks, uses
from tests.crane import CRANE

__all__ = ["built"]  # the fixture, shared with test_images.py

PIPELINE = ["preview", "approve", "infra", "smoke"]
"""smb.yml's stages, each needing the one before."""
READ = "Read the smb stack file"
FIRST_UP = "Create the image repository and the model bucket first"
PUBLISH = "Publish the model versions the Models read"
PUSH = "Push the serving image to the stack's ECR"
DEPLOY = "Deploy infra"
SMOKE = "Smoke load test with the SLO gate"
TOKEN_VARIABLE = "MODEL_API_TOKEN"
MODEL_TYPE = "aws:sagemaker/model:Model"
TARGETS = ROOT / ".github" / "scripts" / "registry_targets.py"


def jobs() -> dict[str, Any]:
    return dict(workflow("smb.yml")["jobs"])


def read_env() -> dict[str, str]:
    return {"SMOKE_SLO": str(ROOT / plain_env("smb.yml")["SMOKE_SLO"])}


def read_smb(tmp: Path, stack: str) -> tuple[int, dict[str, str], str]:
    """The preview job's `Read the smb stack file` step run on Pulumi.<stack>.yaml in `tmp`."""
    return run_script(step_named(jobs()["preview"], READ), tmp, {"STACK": stack, **read_env()})


def shipped(stack: str, tmp: Path) -> dict[str, str]:
    (tmp / f"Pulumi.{stack}.yaml").write_text((ROOT / f"Pulumi.{stack}.yaml").read_text())
    code, outputs, out = read_smb(tmp, stack)
    assert code == 0, f"reading Pulumi.{stack}.yaml failed: {out}"
    return outputs


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The offline plan (`pulumi preview --json`'s shape) of every shipped smb stack's infra layer."""
    out = tmp_path_factory.mktemp("smb-plans")
    paths = {}
    for stack in smb_stacks():
        path = out / f"{stack}.json"
        command = [sys.executable, "-m", "servectl", "plan", "--stack", stack, "--layer", "infra"]
        subprocess.run([*command, "--out", str(path)], check=True, cwd=ROOT, capture_output=True, timeout=300)
        paths[stack] = path
    return paths


def test_stages_need_each_other_in_order() -> None:
    found = jobs()
    assert list(found) == PIPELINE, f"smb.yml's jobs: {list(found)}"
    for before, after in itertools.pairwise(PIPELINE):
        assert set(PIPELINE[: PIPELINE.index(after)]) <= ancestors(found, after), (
            f"{after} must run only after {before} and everything before it: needs {ancestors(found, after)}"
        )


def test_environments_and_identities_per_job() -> None:
    """Read-only role to preview, reviewers without credentials, the deploy role to apply, and the smoke
    test with its token only."""
    found = jobs()
    environments = {name: job.get("environment") for name, job in found.items()}
    assert environments == {
        "preview": "${{ inputs.stack }}-preview",
        "approve": "${{ inputs.stack }}",
        "infra": "${{ inputs.stack }}-deploy",
        "smoke": "${{ inputs.stack }}-deploy",
    }, environments
    assert found["approve"]["permissions"] == {}, "the approval job holds no credentials"
    assert found["infra"]["permissions"] == {"contents": "read", "id-token": "write"}, found["infra"]
    assert found["smoke"]["permissions"] == {"contents": "read"}, "the smoke test needs no cloud identity"
    for name in ("preview", "infra"):
        assert "aws-actions/configure-aws-credentials" in uses(found[name]), f"{name} uses OIDC"
    for name in ("approve", "smoke"):
        assert "aws-actions/configure-aws-credentials" not in uses(found[name]), f"{name} has no AWS role"
    for name, job in found.items():
        assert job["runs-on"] == "ubuntu-24.04", f"{name}: an smb stack has no deploy runner"


def test_gate_before_any_up() -> None:
    """The preview gates the real preview; infra re-plans and re-gates before its first `up`."""
    found = jobs()
    preview = found["preview"]
    assert first(preview, "pulumi preview --stack") < first(preview, "servectl policy check"), (
        "plan, then gate"
    )
    assert "pulumi up" not in json.dumps(preview), "the preview job applies nothing"
    infra = found["infra"]
    gate = first(infra, "servectl policy check")
    assert first(infra, "pulumi preview --stack") == gate < first(infra, "pulumi up"), (
        "infra gates a fresh preview before the first `up`"
    )
    script = step_named(infra, "Gate the plan about to be applied")["run"]
    assert script.index("pulumi preview") < script.index("servectl policy check infra.json"), script
    assert "|| true" not in script, "a denied plan must stop the job"


def test_image_is_pushed_between_the_repository_and_the_models() -> None:
    """The first `up` targets the repository and the model bucket (from the gated plan), then the push, then
    the versions published (from the image just pushed), then everything else."""
    names = [s.get("name") for s in jobs()["infra"]["steps"]]
    steps = ("Gate the plan about to be applied", FIRST_UP, "Fetch the images built for this run", PUSH,
             PUBLISH, DEPLOY)  # fmt: skip
    order = [names.index(n) for n in steps]
    assert order == sorted(order), f"infra's steps in the wrong order: {names}"
    first_up = step_named(jobs()["infra"], FIRST_UP)["run"]
    assert "registry_targets.py infra.json" in first_up and '"${targets[@]}"' in first_up, first_up
    push = step_named(jobs()["infra"], PUSH)["run"]
    assert (
        '.github/scripts/push-image.sh "$SERVING_TARBALL" "$SERVING_IMAGE" "$SERVING_TAG" "$SERVING_DIGEST"'
        in (push)
    ), "the same push as stack.yml's, which test_images.py runs against a registry"


def test_every_job_deploys_the_digest_preview_chose() -> None:
    found = jobs()
    assert found["preview"]["outputs"]["serving_digest"] == "${{ steps.images.outputs.serving }}"
    assert found["infra"]["env"]["SERVING_DIGEST"] == "${{ needs.preview.outputs.serving_digest }}"
    for name in ("preview", "infra"):
        steps = found[name]["steps"]
        position = [s.get("name") for s in steps].index("Put this run's image digest in the stack file")
        readers = [i for i, s in enumerate(steps) if re.search(r"pulumi (preview|up)", s.get("run", ""))]
        assert readers and position < min(readers), f"{name}: the digest must be in place before {readers}"
    pick = step_named(found["preview"], "Keep the image already in the registry")["run"]
    assert '.github/scripts/pick-image.sh "$SERVING_IMAGE" "$SERVING_TAG" "$BUILT_SERVING_DIGEST"' in pick


@pytest.mark.parametrize("stack", smb_stacks())
def test_reader_on_the_shipped_stack(stack: str, tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    outputs = shipped(stack, tmp_path)
    region, account = config["model-serving:regions"][0]["region"], config["model-serving:accountId"]
    repository = f"{stack}/{config['model-serving:image']['repository']}"
    assert outputs == {
        "region": region,
        "account": account,
        "backend": config["model-serving:state"]["backend"],
        "secrets_provider": config["model-serving:state"]["secretsProvider"],
        "repository": repository,
        "serving_image": f"{account}.dkr.ecr.{region}.amazonaws.com/{repository}",
        "smoke_models": "tabular-classifier",
    }, outputs


def fixture_config(**changes: Any) -> dict[str, Any]:
    """smb-eu's stack file with some keys changed (None removes one)."""
    config = dict(yaml.safe_load((ROOT / "Pulumi.smb-eu.yaml").read_text())["config"])
    config.update(changes)
    return {k: v for k, v in config.items() if v is not None}


STATE = "model-serving:state"
EU_STATE = fixture_config()[STATE]


@pytest.mark.parametrize(
    ("stack", "changes", "message"),
    [
        ("eu-prod", {}, "not an smb stack name"),
        ("smb-x", {"model-serving:profile": "enterprise"}, "profile must be smb"),
        (
            "smb-x",
            {"model-serving:regions": [{"region": "eu-west-1"}, {"region": "eu-central-1"}]},
            "exactly one region",
        ),
        ("smb-x", {STATE: {**EU_STATE, "backend": "s3://b?region=eu-central-1"}}, "state.backend"),
        ("smb-x", {STATE: {**EU_STATE, "backend": "https://api.pulumi.com"}}, "state.backend"),
        ("smb-x", {STATE: {**EU_STATE, "secretsProvider": "passphrase"}}, "state.secretsProvider"),
        ("smb-x", {"model-serving:accountId": "12"}, "accountId"),
        ("smb-x", {"model-serving:models": [{"name": "other"}]}, "slo-deploy.yaml gates"),
        ("smb-x", {"model-serving:image": {"repository": "Bad Name"}}, "image.repository"),
    ],
    ids=[
        "cluster-stack",
        "not-smb",
        "two-regions",
        "backend-elsewhere",
        "hosted-backend",
        "passphrase",
        "account",
        "smoke-model-not-served",
        "repository",
    ],
)
def test_reader_fails_closed(stack: str, changes: dict[str, Any], message: str, tmp_path: Path) -> None:
    (tmp_path / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": fixture_config(**changes)}))
    code, outputs, out = read_smb(tmp_path, stack)
    assert code != 0 and message in out, f"expected a refusal naming {message!r}: {code} {out}"
    assert outputs == {}, "a refused stack file yields no outputs"


def plan_states(path: Path) -> dict[str, dict[str, Any]]:
    return {s["urn"]: s["newState"] for s in json.loads(path.read_text())["steps"]}


def targets(plan: Path, repository: str) -> tuple[int, list[str], str]:
    result = subprocess.run([sys.executable, str(TARGETS), str(plan), repository], check=False,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    return result.returncode, result.stdout.split(), result.stderr


@pytest.mark.parametrize("stack", smb_stacks())
def test_first_up_creates_what_the_models_pull_from_and_no_model(
    stack: str, plans: dict[str, Path], tmp_path: Path
) -> None:
    outputs = shipped(stack, tmp_path)
    states = plan_states(plans[stack])
    code, urns, err = targets(plans[stack], outputs["repository"])
    assert code == 0, err
    repository = states[urns[0]]
    assert repository["type"] == "aws:ecr/repository:Repository", urns[0]
    assert repository["inputs"]["name"] == outputs["repository"], repository["inputs"]
    images = {s["inputs"]["primaryContainer"]["image"] for s in states.values() if s["type"] == MODEL_TYPE}
    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    digest = config["model-serving:image"]["digest"]
    assert images == {f"{outputs['serving_image']}@{digest}"}, (
        f"{stack}: every Model must pull the image the pipeline pushes ({outputs['serving_image']}): {images}"
    )
    kinds = {states[u]["type"] for u in urns}
    assert not any(k.startswith("aws:sagemaker") for k in kinds), (
        f"the first up creates no SageMaker: {kinds}"
    )
    for urn in urns:
        state = states[urn]
        needed = [*(state.get("dependencies") or []), *([state["parent"]] if state.get("parent") else [])]
        if state.get("provider"):
            needed.append(state["provider"].rsplit("::", 1)[0])
        missing = [n for n in needed if n not in urns]
        assert missing == [], f"{stack}: Pulumi refuses a targeted create of {urn} without {missing}"


def test_targets_refuse_a_plan_without_the_repository(plans: dict[str, Path]) -> None:
    code, urns, err = targets(plans["smb-eu"], "smb-eu/model-serving/elsewhere")
    assert code != 0 and "0 ECR repositories named 'smb-eu/model-serving/elsewhere'" in err, err
    assert urns == [], "no targets, so no partial up"


def test_targets_refuse_a_dangling_dependency(tmp_path: Path) -> None:
    repo = {"urn": "urn:r", "type": "aws:ecr/repository:Repository", "inputs": {"name": "s/r"},
            "dependencies": ["urn:key"]}  # fmt: skip
    (tmp_path / "plan.json").write_text(json.dumps({"steps": [{"op": "create", "newState": repo}]}))
    code, _, err = targets(tmp_path / "plan.json", "s/r")
    assert code != 0 and "needs urn:key, which the plan does not hold" in err, err


def first_up(tmp_path: Path, plan: Path, repository: str) -> tuple[int, list[str], str]:
    """The infra job's first `up` run for real, with a `pulumi` that records its arguments."""
    (tmp_path / "infra.json").write_text(plan.read_text())
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / ".github").symlink_to(ROOT / ".github")
    record = tmp_path / "pulumi-args"
    executable(tmp_path / "bin-pulumi", f'#!/bin/sh\nfor a in "$@"; do echo "$a"; done > {record}\n')
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin-pulumi").rename(tmp_path / "bin" / "pulumi")
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "STACK": "smb-eu", "REPOSITORY": repository}
    code, _, out = run_script(step_named(jobs()["infra"], FIRST_UP), tmp_path, env, shell=BASH)
    return code, record.read_text().splitlines() if record.exists() else [], out


def test_first_up_targets_exactly_the_closure(plans: dict[str, Path], tmp_path: Path) -> None:
    code, args, out = first_up(tmp_path, plans["smb-eu"], "smb-eu/model-serving/server")
    assert code == 0, out
    _, urns, _ = targets(plans["smb-eu"], "smb-eu/model-serving/server")
    assert args[:5] == ["up", "--stack", "smb-eu", "--yes", "--skip-preview"], args
    named = [args[i + 1] for i, a in enumerate(args) if a == "--target"]
    assert named == urns and len(named) == len(set(named)) > 1, named


def test_first_up_applies_nothing_without_targets(plans: dict[str, Path], tmp_path: Path) -> None:
    code, args, out = first_up(tmp_path, plans["smb-eu"], "smb-eu/none")
    assert code != 0, f"a plan without the repository must stop the job: {out}"
    assert args == [], f"an untargeted `up` would create the Models before the push: {args}"


@pytest.mark.parametrize(
    ("url", "written"),
    [
        ("https://api.smb.models.example.eu", "https://api.smb.models.example.eu"),
        (
            "https://abc123.execute-api.me-central-1.amazonaws.com/",
            "https://abc123.execute-api.me-central-1.amazonaws.com",
        ),
        ("http://api.smb.models.example.eu", None),
        ("", None),
    ],
    ids=["domain", "execute-api", "plain-http", "none"],
)
def test_api_address_is_https_only(url: str, written: str | None, tmp_path: Path) -> None:
    executable(tmp_path / "pulumi", f"#!/bin/sh\necho '{url}'\n")
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "STACK": "smb-eu"}
    code, outputs, out = run_script(
        step_named(jobs()["infra"], "The API's address"), tmp_path, env, shell=BASH
    )
    if written is None:
        assert code != 0 and "not an HTTPS host" in out, f"{code} {out}"
        assert outputs == {}, outputs
    else:
        assert code == 0 and outputs == {"url": written}, f"{code} {outputs} {out}"


def test_smoke_targets_the_stacks_api_with_a_token_read_by_name() -> None:
    found = jobs()
    step = step_named(found["smoke"], SMOKE)
    assert step["env"]["API_URL"] == "${{ needs.infra.outputs.api_url }}", "the stack's own output"
    assert found["infra"]["outputs"]["api_url"] == "${{ steps.api.outputs.url }}", found["infra"]["outputs"]
    for flag in ('--target "$API_URL"', f"--bearer-token-env {TOKEN_VARIABLE}", '--models "$SMOKE_MODELS"',
                 '--slo "$SMOKE_SLO"', '--profile "$SMOKE_PROFILE"'):  # fmt: skip
        assert flag in step["run"], f"the smoke test must pass {flag}: {step['run']}"
    assert step["env"][TOKEN_VARIABLE] == f"${{{{ secrets.{TOKEN_VARIABLE} }}}}", step["env"]
    holders = [
        f"{name}/{s.get('name')}"
        for name, job in found.items()
        for s in job.get("steps", [])
        if "secrets." in json.dumps({**job.get("env", {}), **s.get("env", {}), **s.get("with", {})})
    ]
    assert holders == [f"smoke/{SMOKE}"], f"only the load test holds a secret: {holders}"
    for _, script in runs(found["smoke"]):
        assert not re.search(rf"\$\{{?{TOKEN_VARIABLE}", script), "the token's value must never be expanded"


@pytest.mark.parametrize("stack", smb_stacks())
def test_smoke_command_is_one_the_load_test_accepts(stack: str, tmp_path: Path) -> None:
    """Run for real against a closed port: without the token a configuration error naming the variable;
    with one, profile, SLO file and models agree (exit 3: the target unreachable); the token never printed."""
    step = step_named(jobs()["smoke"], SMOKE)
    models = shipped(stack, tmp_path)["smoke_models"]
    work = tmp_path / "work"
    work.mkdir()
    for shared in (".venv", "loadtests"):
        (work / shared).symlink_to(ROOT / shared)
    env = {**plain_env("smb.yml"), "API_URL": "https://127.0.0.1:9", "SMOKE_MODELS": models}
    code, _, out = run_script(step, work, {**env, TOKEN_VARIABLE: ""}, shell=BASH)
    assert code == 2 and TOKEN_VARIABLE in out, f"{stack}: the token must be required by name: {code} {out}"
    token = "smoke-token-5d1e2b"  # a dummy, looked for in the output
    code, _, out = run_script(step, work, {**env, TOKEN_VARIABLE: token}, shell=BASH)
    assert code == 3 and "cannot reach https://127.0.0.1:9" in out, f"{stack}: {code} {out}"
    assert token not in out, f"{stack}: the token was printed"


def test_every_pulumi_step_names_the_stacks_backend() -> None:
    for name, job in jobs().items():
        for step in job["steps"]:
            if re.search(r"\bpulumi\b", step.get("run", "")):
                env = {**job.get("env", {}), **step.get("env", {})}
                assert "PULUMI_BACKEND_URL" in env, f"{name}/{step.get('name')}: no state backend set"


def test_pulumi_and_tarball_agree_with_the_other_workflows() -> None:
    smb, stack, images = plain_env("smb.yml"), plain_env("stack.yml"), plain_env("images.yml")
    assert smb["PULUMI_VERSION"] == stack["PULUMI_VERSION"], "one Pulumi CLI for every pipeline"
    assert smb["SERVING_TARBALL"] == images["SERVING_TARBALL"], "infra pushes the tarball images.yml saved"
    inputs = workflow("smb.yml")["on"]["workflow_call"]["inputs"]
    assert {n: (i["type"], i["required"]) for n, i in inputs.items()} == dict.fromkeys(
        ("stack", "serving_digest", "serving_tag"), ("string", True)
    ), inputs


def test_push_lands_under_the_recorded_digest(built: tuple[Path, dict[str, str]], registry: str) -> None:
    """smb.yml's push step run for real against a registry on loopback: the image the Models will pull is
    there under the digest the images job recorded, and a re-run keeps it."""
    work, digests = built
    step = step_named(jobs()["infra"], PUSH)
    env = {**push_env(work, registry, digests["runner"], digests["serving"], digests["retrain"]),
           **plain_env("smb.yml"), "SERVING_IMAGE": f"{registry}/smb-eu/model-serving/server"}  # fmt: skip
    code, _, out = run_script(step, work, env, shell=BASH)
    assert code == 0 and "pushed" in out, out
    found = subprocess.run([str(CRANE), "digest", f"{env['SERVING_IMAGE']}:{env['SERVING_TAG']}"], check=True,
                           text=True, capture_output=True, timeout=60).stdout.strip()  # fmt: skip
    assert found == digests["serving"], (
        f"the registry holds {found}, the Models reference {digests['serving']}"
    )
    code, _, out = run_script(step, work, env, shell=BASH)
    assert code == 0 and "kept" in out, f"a re-run keeps the image: {code} {out}"


@pytest.mark.parametrize("stack", smb_stacks())
def test_only_the_serving_digest_changes(stack: str, tmp_path: Path) -> None:
    source = ROOT / f"Pulumi.{stack}.yaml"
    (tmp_path / source.name).write_text(source.read_text())
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / ".github").symlink_to(ROOT / ".github")
    digest = "sha256:" + "e" * 64
    step = step_named(jobs()["infra"], "Put this run's image digest in the stack file")
    code, _, out = run_script(step, tmp_path, {"STACK": stack, "SERVING_DIGEST": digest}, shell=BASH)
    assert code == 0, out
    changed = [
        (old, new)
        for old, new in zip(
            source.read_text().splitlines(), (tmp_path / source.name).read_text().splitlines(), strict=True
        )
        if old != new
    ]
    assert len(changed) == 1 and changed[0][1].endswith(f"digest: {digest}"), changed
