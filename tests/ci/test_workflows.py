"""The CI/CD workflows in .github/workflows: the deploy pipeline per stack, its security rules, actionlint.

The workflows are parsed as YAML and checked rule by rule; the scripts they run (reading the stack files,
the runner jobs' set-up from their image, the smoke test's command line, the canary's kubeconfig) are
executed here for real, and actionlint (with shellcheck) lints them as `make workflows-lint` does. The
images the pipeline builds and pushes are tested in test_images.py.
"""

import itertools
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from stacks.components.runner import RUNNER_EGRESS_DOMAINS
from tests.ci.conftest import (
    BASH,
    ROOT,
    WORKFLOWS,
    executable,
    plain_env,
    run_script,
    runs,
    step_named,
    workflow,
)

ACTIONLINT = ROOT / ".tools" / "bin" / "actionlint"
LOCK = ROOT / "stacks" / "artifacts.lock.json"
RUNNER_DOCKERFILE = ROOT / "stacks" / "runner" / "Dockerfile"
PIPELINE = ["preview", "approve", "infra", "platform", "smoke", "canary"]
"""The deploy stages in stack.yml, each needing the one before."""
RUNNER_JOBS = ["platform", "smoke", "canary"]
"""The jobs on the stack's deploy runner, in the order they run."""
CODEBUILD_LABEL = "codebuild-{}-${{{{ github.run_id }}}}-${{{{ github.run_attempt }}}}"
"""The CodeBuild-hosted runner label: `codebuild-<project>-<run id>-<run attempt>` (AWS CodeBuild docs)."""
RUNNER_LABEL = CODEBUILD_LABEL.format("${{ needs.preview.outputs.runner }}")
"""The one label every runner job asks for: the stack's runner project, this run, this attempt."""
RUNNER_ACTIONS = {
    "actions/checkout",
    "actions/upload-artifact",
    "github/codeql-action/upload-sarif",
}
"""The actions a job behind the runner's egress firewall may use: they talk to GitHub only (the repository,
the artifact store, code scanning) and install nothing. pulumi/actions fetches the CLI from Pulumi's site,
setup-kubectl from the Kubernetes release site, and setup-python and setup-go install toolchains the image
already has (setup-python refuses Debian-based images)."""
DEPLOY_ENVIRONMENT = "${{ inputs.stack }}-deploy"
TOKEN_VARIABLE = "MODEL_API_TOKEN"
KEY_PATTERN = re.compile(r"aws-access-key-id|aws-secret-access-key|aws_access_key_id|aws_secret_access_key|"
                         r"aws_session_token", re.IGNORECASE)  # fmt: skip


def all_workflows() -> list[str]:
    return sorted(p.name for p in WORKFLOWS.glob("*.yml"))


def aws_stacks(root: Path = ROOT) -> list[str]:
    """Every shipped stack deploy.yml deploys to AWS through stack.yml: each Pulumi.<stack>.yaml but the
    onprem-* ones and the smb-* ones (no cluster, no deploy runner: docs/smb.md)."""
    names = [p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in root.glob("Pulumi.*.yaml")]
    return sorted(n for n in names if not n.startswith(("onprem-", "smb-")))


def smb_stacks(root: Path = ROOT) -> list[str]:
    """Every shipped smb stack, which deploy.yml deploys through smb.yml: each Pulumi.smb-*.yaml."""
    return sorted(
        p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in root.glob("Pulumi.smb-*.yaml")
    )


def stack_config(stack: str) -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"])


def workflow_env() -> dict[str, str]:
    """stack.yml's workflow-level variables that are plain values (no expressions), as a job sees them."""
    return plain_env("stack.yml")


def read_env() -> dict[str, str]:
    """What the `Read the stack file` step gets from the workflow: the smoke test's SLO file."""
    return {"SMOKE_SLO": str(ROOT / workflow_env()["SMOKE_SLO"])}


def read_stack(stack: str, root: Path = ROOT, tmp: Path | None = None) -> dict[str, str]:
    """The preview job's outputs for a stack file: the real `Read the stack file` step run on it."""
    step = step_named(workflow("stack.yml")["jobs"]["preview"], "Read the stack file")
    assert tmp is not None
    if root != tmp:
        shutil.copy(root / f"Pulumi.{stack}.yaml", tmp)
    code, outputs, stderr = run_script(step, tmp, {"STACK": stack, **read_env()})
    assert code == 0, f"reading Pulumi.{stack}.yaml failed: {stderr.strip()}"
    return outputs


def ancestors(jobs: dict[str, Any], name: str) -> set[str]:
    needs = jobs[name].get("needs", [])
    direct = {needs} if isinstance(needs, str) else set(needs)
    return direct.union(*(ancestors(jobs, n) for n in direct)) if direct else set()


def first(job: dict[str, Any], needle: str, cwd: str | None = None) -> int:
    """Index among the job's `run:` steps of the first that contains `needle` (and runs in `cwd`)."""
    for index, (where, script) in enumerate(runs(job)):
        if needle in script and (cwd is None or where == cwd):
            return index
    raise AssertionError(f"no step runs {needle!r}" + (f" in {cwd}" if cwd else ""))


def runner_jobs(jobs: dict[str, Any]) -> list[str]:
    """The jobs that run on a CodeBuild runner, in file order."""
    return [n for n, j in jobs.items() if str(j["runs-on"]).startswith("codebuild-")]


def uses(job: dict[str, Any]) -> list[str]:
    """The actions a job's steps use, without their refs."""
    return [str(s["uses"]).split("@", 1)[0] for s in job["steps"] if "uses" in s]


# A stack file as the lead's layers will ship them: the fields the workflow reads.
FIXTURE: dict[str, Any] = {
    "config": {
        "aws:region": "eu-central-1",
        "model-serving:accountId": "123456789012",
        "model-serving:regions": [{"region": "eu-central-1"}, {"region": "eu-west-1"}],
        "model-serving:state": {
            "backend": "s3://acme-eu-state?region=eu-central-1",
            "secretsProvider": "awskms://alias/acme-eu-state?region=eu-central-1",
        },
        "model-serving:gateway": {"apiHost": "api.models.example.eu"},
        "model-serving:models": [
            {"name": "ticket-router", "variants": {"weights": {"1": 100}}},
            {"name": "tabular-classifier", "variants": {"weights": {"1": 90, "2": 10}}},
        ],
        "model-serving:image": {
            "repository": "model-serving/server",
            "digest": "sha256:" + "1" * 64,
            "runnerRepository": "model-serving/deploy-runner",
            "runnerDigest": "sha256:" + "2" * 64,
            "retrainRepository": "model-serving/retrain",
            "retrainDigest": "sha256:" + "3" * 64,
        },
    }
}


def state(**changes: str) -> dict[str, Any]:
    """The fixture's state block with some fields changed."""
    return {"model-serving:state": {**FIXTURE["config"]["model-serving:state"], **changes}}


def write_fixture(tmp: Path, stack: str, changes: dict[str, Any]) -> None:
    config = {**FIXTURE["config"], **changes}
    config = {k: v for k, v in config.items() if v is not None}
    (tmp / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}))


def test_deploy_matrix_is_every_aws_stack() -> None:
    matrix = workflow("deploy.yml")["jobs"]["stack"]["strategy"]["matrix"]["stack"]
    assert sorted(matrix) == aws_stacks(), f"deploy.yml deploys {matrix}; the AWS stacks: {aws_stacks()}"


def test_deploy_smb_matrix_is_every_smb_stack() -> None:
    """The two lists split the AWS stack files: cluster stacks through stack.yml, smb ones through smb.yml."""
    jobs = workflow("deploy.yml")["jobs"]
    smb = jobs["smb"]["strategy"]["matrix"]["stack"]
    assert sorted(smb) == smb_stacks() != [], (
        f"deploy.yml's smb job deploys {smb}; the smb stacks: {smb_stacks()}"
    )
    cluster = jobs["stack"]["strategy"]["matrix"]["stack"]
    assert not set(smb) & set(cluster), f"a stack in both pipelines: {set(smb) & set(cluster)}"


def test_smb_stacks_lists_only_smb_files(tmp_path: Path) -> None:
    for stack in ("eu-prod", "onprem-lab", "smb-lab", "smb-zz"):
        (tmp_path / f"Pulumi.{stack}.yaml").write_text("config: {}\n")
    assert smb_stacks(tmp_path) == ["smb-lab", "smb-zz"], smb_stacks(tmp_path)
    assert aws_stacks(tmp_path) == ["eu-prod"], aws_stacks(tmp_path)


@pytest.mark.parametrize(("job_name", "called"), [("stack", "stack.yml"), ("smb", "smb.yml")])
def test_deploy_locks_each_stack_and_isolates_failures(job_name: str, called: str) -> None:
    job = workflow("deploy.yml")["jobs"][job_name]
    assert job["uses"] == f"./.github/workflows/{called}", "each stack runs its one reusable pipeline"
    assert job["strategy"]["fail-fast"] is False, "one stack's failure must not cancel the others"
    group = job["concurrency"]["group"]
    assert "${{ matrix.stack }}" in group, f"the concurrency group {group!r} must be per stack"
    assert job["concurrency"]["cancel-in-progress"] is False, "a queued run must not cancel a deploy half-way"


def test_pipeline_stages_need_each_other_in_order() -> None:
    jobs = workflow("stack.yml")["jobs"]
    assert set(PIPELINE) <= set(jobs), f"stack.yml lacks {set(PIPELINE) - set(jobs)}"
    for before, after in itertools.pairwise(PIPELINE):
        assert set(PIPELINE[: PIPELINE.index(after)]) <= ancestors(jobs, after), (
            f"{after} must run only after {before} and everything before it: needs {ancestors(jobs, after)}"
        )


@pytest.mark.parametrize("stack", aws_stacks())
def test_every_aws_stack_gets_the_whole_pipeline(stack: str, tmp_path: Path) -> None:
    """Preview, gate, approval environment, infra, then platform, smoke and canary on the one runner of the
    stack's primary region, the smoke and canary legs once per region."""
    jobs = workflow("stack.yml")["jobs"]
    outputs = read_stack(stack, tmp=tmp_path)
    config = stack_config(stack)
    regions = [r["region"] for r in config["model-serving:regions"]]
    primary, account = regions[0], config["model-serving:accountId"]
    assert outputs["runner"] == f"{stack}-{primary}-deploy-runner", f"{stack}: runner {outputs['runner']}"
    assert outputs["deploy_role"] == f"arn:aws:iam::{account}:role/{stack}-{primary}-deploy", outputs
    image = config["model-serving:image"]
    assert outputs["runner_image"] == (
        f"{account}.dkr.ecr.{primary}.amazonaws.com/{stack}/{image['runnerRepository']}"
    ), f"{stack}: the runner image goes to the primary region's ECR: {outputs['runner_image']}"
    preview = jobs["preview"]
    gate = first(preview, "servectl policy check")
    assert first(preview, "pulumi preview --stack") < gate, f"{stack}: the infra preview must come first"
    assert first(preview, "--layer platform") < gate, f"{stack}: the platform plan must precede the gate"
    assert jobs["approve"]["environment"].replace("${{ inputs.stack }}", stack) == stack, (
        f"the approval job must be bound to the environment {stack!r} (its required reviewers)"
    )
    infra = jobs["infra"]
    order = [
        first(infra, "servectl policy check"),
        first(infra, "pulumi up", cwd="."),
        first(infra, "mirror"),
    ]
    assert order == sorted(order), (
        f"{stack}: infra must gate, then `pulumi up` the infra project, then mirror"
    )
    for name in RUNNER_JOBS:
        label = jobs[name]["runs-on"].replace("${{ needs.preview.outputs.runner }}", outputs["runner"])
        assert label == CODEBUILD_LABEL.format(outputs["runner"]), f"{stack}: {name} runs on {label}"
    platform = jobs["platform"]
    assert first(platform, "policy check") < first(platform, "pulumi up", cwd="stacks/platform"), (
        f"{stack}: the platform project must be gated, then deployed"
    )
    legs = [leg["region"] for leg in json.loads(outputs["regions"])["include"]]
    assert legs == regions, f"{stack}: smoke and canary must run once per region: {legs}"
    smoke = runs(jobs["smoke"])[first(jobs["smoke"], "servectl loadtest")][1]
    assert "--profile" in smoke and "--slo" in smoke, f"the smoke test must gate on SLOs: {smoke}"
    canary = runs(jobs["canary"])[first(jobs["canary"], "analyze")][1]
    assert "servectl experiment analyze" in canary, canary
    assert '--start "$DEPLOYED_AT"' in canary, "the canary judges the window since the deploy, not all time"


def test_read_stack_outputs(tmp_path: Path) -> None:
    write_fixture(tmp_path, "eu-test", {})
    out = read_stack("eu-test", root=tmp_path, tmp=tmp_path)
    assert out["region"] == "eu-central-1", f"the primary region is the first listed: {out}"
    assert out["backend"] == "s3://acme-eu-state?region=eu-central-1", out
    assert out["secrets_provider"] == "awskms://alias/acme-eu-state?region=eu-central-1", out
    assert out["runner"] == "eu-test-eu-central-1-deploy-runner", "one runner, in the primary region"
    assert out["deploy_role"] == "arn:aws:iam::123456789012:role/eu-test-eu-central-1-deploy", (
        "one deploy role per stack, named after the primary region"
    )
    assert json.loads(out["regions"]) == {
        "include": [
            {"region": "eu-central-1", "api_host": "eu-central-1.api.models.example.eu"},
            {"region": "eu-west-1", "api_host": "eu-west-1.api.models.example.eu"},
        ]
    }, "per region, that region's own gateway host <region>.<api host>"
    assert out["smoke_models"] == "tabular-classifier", "the smoke test loads the models the deploy SLO gates"
    assert json.loads(out["models"]) == ["tabular-classifier"], (
        "only models with a candidate version get a canary analysis"
    )
    registry = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/eu-test"
    assert out["runner_image"] == f"{registry}/model-serving/deploy-runner", (
        "infra pushes the runner image to the primary region's ECR, under the stack's namespace"
    )
    assert out["serving_image"] == f"{registry}/model-serving/server", out
    assert out["retrain_image"] == f"{registry}/model-serving/retrain", out


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model-serving:state": None}, "state.backend"),
        ({"model-serving:state": {"backend": "https://api.pulumi.com"}}, "state.backend"),
        (state(backend="s3://b?region=us-east-1"), "state.backend"),
        (state(secretsProvider="passphrase"), "state.secretsProvider"),
        (state(secretsProvider="awskms://alias/k?region=us-east-1"), "state.secretsProvider"),
        ({"model-serving:accountId": None}, "accountId"),
        ({"model-serving:regions": None}, "no AWS region"),
        ({"model-serving:models": [{"name": "ticket-router"}]}, "slo-deploy.yaml gates"),
        ({"model-serving:image": {"repository": "model-serving/server"}}, "image.runnerRepository"),
        ({"model-serving:image": None}, "image.runnerRepository"),
        (
            {
                "model-serving:image": {
                    "repository": "model-serving/server",
                    "runnerRepository": "model-serving/r",
                }
            },
            "image.retrainRepository",
        ),
    ],
    ids=[
        "no-state",
        "hosted-backend",
        "backend-abroad",
        "passphrase",
        "kms-abroad",
        "no-account",
        "onprem",
        "smoke-model-not-served",
        "no-runner-repository",
        "no-images",
        "no-retrain-repository",
    ],
)
def test_read_stack_fails_closed(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    write_fixture(tmp_path, "bad", changes)
    step = step_named(workflow("stack.yml")["jobs"]["preview"], "Read the stack file")
    code, outputs, stderr = run_script(step, tmp_path, {"STACK": "bad", **read_env()})
    assert code != 0 and message in stderr, f"expected a failure naming {message!r}: {code} {stderr}"
    assert outputs == {}, "a rejected stack file must yield no outputs"


def key_usages(text: str) -> list[str]:
    """Long-lived AWS key inputs or variables in a workflow's text."""
    return KEY_PATTERN.findall(text)


def test_key_usages_finds_long_lived_keys() -> None:
    bad = "with:\n  aws-access-key-id: ${{ secrets.KEY }}\nenv:\n  AWS_SECRET_ACCESS_KEY: x\n"
    assert len(key_usages(bad)) == 2, "the check must catch both the action input and the variable"
    assert key_usages("with:\n  role-to-assume: ${{ vars.AWS_ROLE_ARN }}\n") == []


@pytest.mark.parametrize("name", all_workflows())
def test_oidc_only(name: str) -> None:
    text = (WORKFLOWS / name).read_text()
    assert key_usages(text) == [], f"{name} uses long-lived AWS keys: {key_usages(text)}"
    for job_name, job in workflow(name)["jobs"].items():
        for step in job.get("steps", []):
            if str(step.get("uses", "")).startswith("aws-actions/configure-aws-credentials@"):
                assert job["permissions"].get("id-token") == "write", f"{job_name}: OIDC needs id-token"
                assert step["with"]["role-to-assume"] == "${{ vars.AWS_ROLE_ARN }}", f"{job_name}: role"
                assert "environment" in job, f"{job_name}: the role ARN must come from an environment"


def test_runner_jobs_share_one_label_and_never_share_a_queue() -> None:
    """AWS: jobs with one CodeBuild label must never be queued together (a runner could take the other's
    job). The runner jobs follow one another through `needs`, and each matrix runs one leg at a time."""
    jobs = workflow("stack.yml")["jobs"]
    assert runner_jobs(jobs) == RUNNER_JOBS, f"runner jobs: {runner_jobs(jobs)}"
    for name in RUNNER_JOBS:
        assert jobs[name]["runs-on"] == RUNNER_LABEL, f"{name} must run on the stack's one runner"
        strategy = jobs[name].get("strategy", {})
        if "matrix" in strategy:
            assert strategy.get("max-parallel") == 1, f"{name}'s legs share the label: one at a time"
    for later in RUNNER_JOBS[1:]:
        assert set(RUNNER_JOBS[: RUNNER_JOBS.index(later)]) <= ancestors(jobs, later), (
            f"{later} could overlap"
        )


@pytest.mark.parametrize("name", all_workflows())
def test_runner_jobs_run_as_the_runner_role(name: str) -> None:
    """Pulumi runs as the runner's role; the kubeconfig's exec assumes the deploy role. A `deploy` profile
    (role_arn = the deploy role) would make that exec assume the deploy role from the deploy role."""
    text = (WORKFLOWS / name).read_text()
    assert "AWS_PROFILE" not in text, f"{name} switches the AWS profile"
    for job_name, job in workflow(name)["jobs"].items():
        for _, script in runs(job) if "steps" in job else []:
            for needle in ("[profile", "credential_source", "role_arn", ".aws/config"):
                assert needle not in script, f"{name}/{job_name} writes an AWS profile ({needle!r})"
    jobs = workflow("stack.yml")["jobs"]
    for job_name in RUNNER_JOBS:
        assert "configure-aws-credentials" not in " ".join(uses(jobs[job_name])), f"{job_name}: no OIDC"
        assert "id-token" not in jobs[job_name]["permissions"], f"{job_name} must not ask for an OIDC token"


def test_runner_jobs_download_only_from_github() -> None:
    """Behind the runner's egress firewall only GitHub and AWS answer: no action that fetches elsewhere or
    installs a toolchain."""
    jobs = workflow("stack.yml")["jobs"]
    for name in RUNNER_JOBS:
        foreign = set(uses(jobs[name])) - RUNNER_ACTIONS
        assert foreign == set(), (
            f"{name} uses actions the runner image makes needless or unreachable: {foreign}"
        )


def test_runner_egress_allows_github_and_no_package_index() -> None:
    """The runner's firewall lets through GitHub's hosts for what the runner jobs do (the agent, actions'
    archives, logs and artifacts, the agent's own download) and no package index: the image has it all."""
    allowed = set(RUNNER_EGRESS_DOMAINS)
    needed = {"github.com", "api.github.com", ".actions.githubusercontent.com", "codeload.github.com",
              ".blob.core.windows.net", "objects.githubusercontent.com",
              "release-assets.githubusercontent.com"}  # fmt: skip
    assert needed <= allowed, f"the runner cannot reach {needed - allowed}"
    for host in ("pypi.org", "files.pythonhosted.org", "proxy.golang.org", "raw.githubusercontent.com"):
        assert not any(host.endswith(d) if d.startswith(".") else host == d for d in allowed), host


CHECK_STEP = "Check the runner image"
SET_UP_STEP = "Set up from the runner image (virtualenv, OPA)"


def test_runner_jobs_start_by_checking_the_image() -> None:
    """Every runner job first checks that the image is the one the workflow expects: the tools the jobs
    run, the prebuilt virtualenv, and Pulumi at the pinned version."""
    jobs = workflow("stack.yml")["jobs"]
    checks = []
    for name in RUNNER_JOBS:
        check = jobs[name]["steps"][0]
        assert check.get("name") == CHECK_STEP, f"{name}: check the image first"
        assert "pulumi version" in check["run"] and "$PULUMI_VERSION" in check["run"], check["run"]
        assert '"$RUNNER_VENV/bin/python"' in check["run"], f"{name}: the check must find the virtualenv"
        assert {"pulumi", "aws", "kubectl", "opa"} <= set(check["env"]["TOOLS"].split()), check["env"]
        checks.append(check)
    assert all(c == checks[0] for c in checks), "one image, one check: the runner jobs' checks differ"


def image_env(tmp_path: Path, pulumi: str, with_venv: bool = True) -> dict[str, str]:
    """An image as the check sees it: stand-ins for its tools on PATH, and its virtualenv."""
    bin_dir, venv = tmp_path / "bin", tmp_path / "venv"
    bin_dir.mkdir()
    step = step_named(workflow("stack.yml")["jobs"]["platform"], CHECK_STEP)
    for tool in step["env"]["TOOLS"].split():
        executable(bin_dir / tool, f"#!/bin/sh\necho {pulumi}\n")
    if with_venv:
        (venv / "bin").mkdir(parents=True)
        executable(venv / "bin" / "python", "#!/bin/sh\n")
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "TOOLS": step["env"]["TOOLS"],
            "PULUMI_VERSION": "3.272.0", "RUNNER_VENV": str(venv)}  # fmt: skip


@pytest.mark.parametrize(
    ("found", "with_venv", "message"),
    [
        ("v3.272.0", True, None),
        ("v3.274.1", True, "has Pulumi v3.274.1"),
        ("v3.272.0", False, "venv/bin/python"),
    ],
    ids=["pinned", "other-pulumi", "no-virtualenv"],
)
def test_runner_image_check_fails_on_another_image(
    tmp_path: Path, found: str, with_venv: bool, message: str | None
) -> None:
    step = step_named(workflow("stack.yml")["jobs"]["platform"], CHECK_STEP)
    code, _, out = run_script(step, tmp_path, image_env(tmp_path, found, with_venv), shell=BASH)
    if message is None:
        assert code == 0, f"the pinned image must pass: {out}"
    else:
        assert code != 0 and message in out, f"expected a failure naming {message!r}: {code} {out}"


def dockerfile_value(instruction: str, key: str) -> str:
    """The default of an ARG, or the value of an ENV, in the runner image's Dockerfile (last one wins)."""
    found = None
    for item in DockerfileParser(path=str(RUNNER_DOCKERFILE)).structure:
        if item["instruction"] != instruction:
            continue
        match = re.search(rf"(?:^|\s){key}=(\S+)", item["value"])
        found = match.group(1) if match else found
    assert found is not None, f"stacks/runner/Dockerfile sets no {instruction} {key}"
    return found


def test_runner_image_is_the_projects_own() -> None:
    """The runner image is built from stacks/runner/Dockerfile (images.yml), not an upstream image from the
    lock file; its Pulumi CLI is the workflow's and its virtualenv is where the jobs look for it."""
    lock = json.loads(LOCK.read_text())
    assert "deploy-runner" not in lock["images"], "the runner image is built here, not mirrored from upstream"
    build = step_named(workflow("images.yml")["jobs"]["build"], "Build the images")["run"]
    assert "--file stacks/runner/Dockerfile" in build, f"images.yml must build the runner image: {build}"
    env = workflow_env()
    assert dockerfile_value("ARG", "PULUMI_VERSION") == env["PULUMI_VERSION"], (
        "the runner image's Pulumi CLI must be the workflow's PULUMI_VERSION"
    )
    assert dockerfile_value("ENV", "RUNNER_VENV") == env["RUNNER_VENV"], (
        "the runner jobs look for the image's virtualenv where the image puts it"
    )


def test_runner_jobs_install_nothing_but_the_checkout() -> None:
    """The image holds every tool and package: no package index, no Go proxy, no make target, and the set-up
    only installs the checkout into the image's virtualenv, from no index."""
    jobs = workflow("stack.yml")["jobs"]
    for name in RUNNER_JOBS:
        job = jobs[name]
        assert job.get("environment") == DEPLOY_ENVIRONMENT, f"{name}: main only, as <stack>-deploy allows"
        text = json.dumps(job)
        for needle in ("PIP_INDEX_URL", "GOPROXY", "make "):
            assert needle not in text, f"{name} still installs from a mirror ({needle!r})"
        set_up = step_named(job, SET_UP_STEP)["run"]
        for flag in ("--no-index", "--no-deps", "--editable ."):
            assert flag in set_up, f"{name}: the checkout is installed offline ({flag}): {set_up}"
        names = [s.get("name") for s in job["steps"]]
        assert names.index(SET_UP_STEP) < min(
            i
            for i, s in enumerate(job["steps"])
            if ".venv/" in s.get("run", "") + s.get("shell", "") and s.get("name") != SET_UP_STEP
        ), f"{name}: the virtualenv is set up before it is used"


def test_runner_set_up_uses_the_image_virtualenv_offline(tmp_path: Path) -> None:
    """The set-up step run for real: the checkout's .venv is the image's, OPA is the image's, and pip is
    asked to install the checkout with no index."""
    step = step_named(workflow("stack.yml")["jobs"]["smoke"], SET_UP_STEP)
    venv, bin_dir, work = tmp_path / "venv", tmp_path / "bin", tmp_path / "work"
    for directory in (venv / "bin", bin_dir, work):
        directory.mkdir(parents=True)
    executable(venv / "bin" / "pip", f'#!/bin/sh\necho "$@" > {tmp_path / "pip-args"}\n')
    executable(bin_dir / "opa", "#!/bin/sh\n")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "RUNNER_VENV": str(venv)}
    code, _, out = run_script(step, work, env, shell=BASH)
    assert code == 0, out
    assert (work / ".venv").resolve() == venv, "the checkout's .venv is the image's virtualenv"
    assert (work / ".tools" / "bin" / "opa").resolve() == bin_dir / "opa", "the gate runs the image's OPA"
    args = (tmp_path / "pip-args").read_text().split()
    assert {"--no-index", "--no-deps", "--no-build-isolation", "--editable", "."} <= set(args), args


def test_runner_set_up_fails_without_opa(tmp_path: Path) -> None:
    step = step_named(workflow("stack.yml")["jobs"]["platform"], SET_UP_STEP)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    executable(venv / "bin" / "pip", f"#!/bin/sh\ntouch {tmp_path / 'installed'}\n")
    env = {"PATH": "/usr/bin:/bin", "RUNNER_VENV": str(venv)}
    code, _, out = run_script(step, tmp_path, env, shell=BASH)
    assert code != 0, f"an image without OPA must fail the set-up: {out}"
    assert not (tmp_path / "installed").exists(), "nothing is installed once the image is found wanting"


def test_smoke_measures_each_regions_gateway_with_a_token_read_by_name() -> None:
    data = workflow("stack.yml")
    jobs, smoke = data["jobs"], data["jobs"]["smoke"]
    step = step_named(smoke, "Smoke load test with the SLO gate")
    assert data["env"]["SMOKE_SLO"] == "loadtests/slo-deploy.yaml", "the deploy SLO gates the smoke test"
    assert step["env"]["API_HOST"] == "${{ matrix.api_host }}", "each leg targets its region's gateway"
    for flag in ('--target "https://$API_HOST"', f"--bearer-token-env {TOKEN_VARIABLE}",
                 '--models "$SMOKE_MODELS"', '--slo "$SMOKE_SLO"'):  # fmt: skip
        assert flag in step["run"], f"the smoke test must pass {flag}: {step['run']}"
    assert smoke.get("environment") == DEPLOY_ENVIRONMENT, "the token is a secret of <stack>-deploy"
    assert step["env"][TOKEN_VARIABLE] == f"${{{{ secrets.{TOKEN_VARIABLE} }}}}", step["env"]
    holders = [
        f"{job_name}/{s.get('name')}"
        for job_name, job in jobs.items()
        for s in job.get("steps", [])
        if "secrets." in json.dumps({**job.get("env", {}), **s.get("env", {}), **s.get("with", {})})
    ]
    assert holders == ["smoke/Smoke load test with the SLO gate"], (
        f"only the load test holds a secret: {holders}"
    )
    for _, script in runs(smoke):
        assert not re.search(rf"\$\{{?{TOKEN_VARIABLE}", script), "the token's value must never be expanded"


@pytest.mark.parametrize("stack", aws_stacks())
def test_smoke_command_is_one_the_load_test_accepts(stack: str, tmp_path: Path) -> None:
    """The smoke step's command line, run for real against a closed port: without the token it is a
    configuration error naming the variable; with one, profile, SLO file and models agree (exit 3, the
    target unreachable, rather than 2), and the token is printed nowhere."""
    step = step_named(workflow("stack.yml")["jobs"]["smoke"], "Smoke load test with the SLO gate")
    models = read_stack(stack, tmp=tmp_path)["smoke_models"]
    work = tmp_path / "work"
    work.mkdir()
    for shared in (".venv", "loadtests"):
        (work / shared).symlink_to(ROOT / shared)
    env = {**workflow_env(), "API_HOST": "127.0.0.1:9", "REGION": "test", "SMOKE_MODELS": models}
    code, _, out = run_script(step, work, {**env, TOKEN_VARIABLE: ""}, shell=BASH)
    assert code == 2 and TOKEN_VARIABLE in out, f"{stack}: the token must be required by name: {code} {out}"
    token = "smoke-token-7f3a9c"  # a dummy, looked for in the output
    code, _, out = run_script(step, work, {**env, TOKEN_VARIABLE: token}, shell=BASH)
    assert code == 3 and "cannot reach https://127.0.0.1:9" in out, f"{stack}: {code} {out}"
    assert token not in out, f"{stack}: the token was printed"


def kubeconfig(role: str | None) -> str:
    args = ["eks", "get-token", "--cluster-name", "c", "--region", "eu-west-1"]
    user = {"exec": {"command": "aws", "args": args + (["--role-arn", role] if role else [])}}
    return json.dumps({"apiVersion": "v1", "kind": "Config", "users": [{"name": "c", "user": user}]})


DEPLOY_ROLE = "arn:aws:iam::123456789012:role/eu-test-eu-central-1-deploy"


@pytest.mark.parametrize(
    ("region", "role", "message"),
    [
        ("eu-west-1", DEPLOY_ROLE, None),
        ("eu-west-1", "arn:aws:iam::123456789012:role/other", "not the deploy role"),
        ("eu-west-1", None, "assumes no role"),
        ("us-east-1", DEPLOY_ROLE, "exports no region us-east-1"),
    ],
    ids=["deploy-role", "other-role", "no-role", "unknown-region"],
)
def test_canary_kubeconfig_must_assume_the_deploy_role(
    tmp_path: Path, region: str, role: str | None, message: str | None
) -> None:
    step = step_named(workflow("stack.yml")["jobs"]["canary"], "Kubeconfig of this region's cluster")
    exported = {"eu-central-1": kubeconfig(DEPLOY_ROLE), "eu-west-1": kubeconfig(role)}
    (tmp_path / "regions.json").write_text(json.dumps({r: {"kubeconfig": k} for r, k in exported.items()}))
    executable(tmp_path / "pulumi", f"#!/bin/sh\ncat {tmp_path / 'regions.json'}\n")
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "REGION": region, "DEPLOY_ROLE": DEPLOY_ROLE,
           "STACK": "eu-test", "RUNNER_TEMP": str(tmp_path)}  # fmt: skip
    code, _, out = run_script(step, tmp_path, env)
    written = tmp_path / "kubeconfig"
    if message is None:
        assert code == 0, out
        assert written.read_text() == kubeconfig(DEPLOY_ROLE), "the region's kubeconfig, as exported"
        assert stat.S_IMODE(written.stat().st_mode) == 0o600, "readable by the job's user only"
    else:
        assert code != 0 and message in out, f"expected {message!r}: {code} {out}"
        assert not written.exists(), "a refused kubeconfig is not written"


def test_no_hosted_pulumi_backend() -> None:
    """Every step that runs a Pulumi command names the stack's backend (`pulumi version`, which reads no
    state, aside), so none falls back to the hosted one."""
    jobs = workflow("stack.yml")["jobs"]
    for name in all_workflows():
        text = (WORKFLOWS / name).read_text()
        assert "PULUMI_ACCESS_TOKEN" not in text, f"{name} logs in to a hosted backend"
    for job_name, job in jobs.items():
        for step in job["steps"]:
            if re.search(r"\bpulumi\b", step.get("run", "").replace("pulumi version", "")):
                env = {**job.get("env", {}), **step.get("env", {})}
                assert "PULUMI_BACKEND_URL" in env, f"{job_name}/{step.get('name')}: no state backend set"


def pin_problems(text: str) -> list[str]:
    """`uses:` lines neither local nor a full commit SHA with a version comment."""
    problems = []
    for line in text.splitlines():
        found = re.match(r"\s*(?:-\s+)?uses:\s*(\S+)(.*)$", line)
        if not found or found.group(1).startswith("./"):
            continue
        _, _, ref = found.group(1).partition("@")
        if not (re.fullmatch(r"[0-9a-f]{40}", ref) and re.search(r"#\s*v\d", found.group(2))):
            problems.append(line.strip())
    return problems


def test_pin_problems_flags_tags_and_bare_shas() -> None:
    bad = "- uses: actions/checkout@v4\n- uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683\n"
    assert len(pin_problems(bad)) == 2, "a tag and a SHA without its version comment are both flagged"
    good = "- uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2\n- uses: ./x.yml"
    assert pin_problems(good) == []


@pytest.mark.parametrize("name", all_workflows())
def test_actions_pinned(name: str) -> None:
    problems = pin_problems((WORKFLOWS / name).read_text())
    assert problems == [], f"{name}: pin these by full commit SHA with a version comment: {problems}"


@pytest.mark.parametrize("name", all_workflows())
def test_permissions_minimal(name: str) -> None:
    data = workflow(name)
    assert data["permissions"] == {}, f"{name}: the workflow grants nothing by default; jobs ask for theirs"
    assert "pull_request_target" not in data["on"], f"{name}: pull_request_target runs PR code with secrets"
    for job_name, job in data["jobs"].items():
        assert "permissions" in job, f"{name}/{job_name} must declare its permissions"
        granted = job["permissions"]
        assert granted != "write-all" and isinstance(granted, dict), f"{name}/{job_name}: {granted}"
        if "uses" in job:
            continue  # a reusable workflow's caller: see test_caller_grants_what_the_pipeline_needs
        used = " ".join(uses(job))
        if granted.get("security-events") == "write":
            assert "upload-sarif" in used, f"{name}/{job_name}: security-events: write without a SARIF upload"
        if granted.get("id-token") == "write":
            assert "configure-aws-credentials" in used, f"{name}/{job_name}: id-token: write without OIDC"
    if name == "stack.yml":
        assert data["jobs"]["approve"]["permissions"] == {}, "the approval job holds no credentials"


@pytest.mark.parametrize(
    ("caller", "called"), [("stack", "stack.yml"), ("smb", "smb.yml"), ("images", "images.yml")]
)
def test_caller_grants_what_the_pipeline_needs(caller: str, called: str) -> None:
    """A called workflow's jobs get at most what the caller grants: grant exactly their union."""
    union: dict[str, str] = {}
    for job in workflow(called)["jobs"].values():
        for scope, level in job["permissions"].items():
            union[scope] = "write" if "write" in (level, union.get(scope)) else level
    job = workflow("deploy.yml")["jobs"][caller]
    assert job["uses"] == f"./.github/workflows/{called}", job
    assert job["permissions"] == union, f"deploy.yml grants {job['permissions']}, {called} needs {union}"


def expression_in_scripts(data: dict[str, Any]) -> list[str]:
    """Steps whose `run:` script contains a `${{ }}` expression (injection: values reach scripts via env)."""
    return [
        f"{job_name}/{step.get('name', step['run'][:30])}"
        for job_name, job in data["jobs"].items()
        for step in job.get("steps", [])
        if "${{" in step.get("run", "")
    ]


def test_expression_in_scripts_flags_inline_expressions() -> None:
    bad = {"jobs": {"j": {"steps": [{"name": "s", "run": "echo ${{ secrets.TOKEN }}"}]}}}
    assert expression_in_scripts(bad) == ["j/s"]
    assert expression_in_scripts({"jobs": {"j": {"steps": [{"run": 'echo "$TOKEN"'}]}}}) == []


@pytest.mark.parametrize("name", all_workflows())
def test_scripts_take_values_from_env(name: str) -> None:
    found = expression_in_scripts(workflow(name))
    assert found == [], f"{name}: pass these values through env, never inline into a script: {found}"


def test_pulumi_cli_matches_the_sdk() -> None:
    pinned = re.search(r"^pulumi==(\S+)$", (ROOT / "constraints.txt").read_text(), re.MULTILINE)
    assert pinned, "constraints.txt pins no pulumi"
    version = workflow("stack.yml")["env"]["PULUMI_VERSION"]
    assert version == pinned.group(1), f"the Pulumi CLI {version} must match the SDK {pinned.group(1)}"


def test_policy_matrix_covers_both_layers_and_onprem(tmp_path: Path) -> None:
    for stack in ("eu-prod", "onprem-lab", "smb-lab"):
        (tmp_path / f"Pulumi.{stack}.yaml").write_text("config: {}\n")
    step = step_named(workflow("policy.yml")["jobs"]["stacks"], "Every stack file and its layers "
                      "(onprem-* stacks have only the platform layer, smb-* only infra)")  # fmt: skip
    code, outputs, stderr = run_script(step, tmp_path, {})
    assert code == 0, stderr
    assert json.loads(outputs["matrix"])["include"] == [
        {"stack": "eu-prod", "layer": "infra"},
        {"stack": "eu-prod", "layer": "platform"},
        {"stack": "onprem-lab", "layer": "platform"},
        {"stack": "smb-lab", "layer": "infra"},
    ], "a cluster stack is gated on both layers, an onprem stack on its platform layer, an smb stack on infra"


def actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    shellcheck = shutil.which("shellcheck")
    assert ACTIONLINT.exists(), f"{ACTIONLINT} is missing: `make setup` builds it"
    assert shellcheck, "shellcheck is missing (`make setup` installs it): actionlint would skip the scripts"
    return subprocess.run(
        [str(ACTIONLINT), "-shellcheck", shellcheck, *map(str, paths)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_actionlint_passes() -> None:
    result = actionlint(*sorted(WORKFLOWS.glob("*.yml")))
    assert result.returncode == 0, f"actionlint found problems:\n{result.stdout}{result.stderr}"


def test_actionlint_runs_shellcheck_on_scripts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\npermissions: {}\njobs:\n  j:\n    runs-on: ubuntu-24.04\n"
        "    steps:\n      - run: echo $UNQUOTED\n"
    )
    result = actionlint(bad)
    assert result.returncode != 0 and "SC2086" in result.stdout, f"shellcheck did not run: {result.stdout}"
