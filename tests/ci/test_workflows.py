"""The CI/CD workflows in .github/workflows: the deploy pipeline per stack, its security rules, actionlint.

The workflows are parsed as YAML and checked rule by rule; the scripts they run on the stack files are
executed here for real, and actionlint (with shellcheck) lints them as `make workflows-lint` does.
"""

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT = ROOT / ".tools" / "bin" / "actionlint"
PIPELINE = ["preview", "approve", "infra", "platform", "smoke", "canary"]
"""The deploy stages in stack.yml, each needing the one before."""
CODEBUILD_LABEL = "codebuild-{}-${{{{ github.run_id }}}}-${{{{ github.run_attempt }}}}"
"""The CodeBuild-hosted runner label: `codebuild-<project>-<run id>-<run attempt>` (AWS CodeBuild docs)."""
TAG_PINNED = {"azure/setup-kubectl"}
"""Actions whose commit SHA could not be verified: pinned by major tag, with a comment saying so."""
KEY_PATTERN = re.compile(r"aws-access-key-id|aws-secret-access-key|aws_access_key_id|aws_secret_access_key|"
                         r"aws_session_token", re.IGNORECASE)  # fmt: skip


def workflow(name: str) -> dict[str, Any]:
    """A workflow file, with PyYAML's boolean `on` key restored."""
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    if True in data:
        data["on"] = data.pop(True)
    return dict(data)


def all_workflows() -> list[str]:
    return sorted(p.name for p in WORKFLOWS.glob("*.yml"))


def aws_stacks(root: Path = ROOT) -> list[str]:
    """Every shipped stack deployed to AWS: each Pulumi.<stack>.yaml but the onprem-* ones."""
    names = [p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in root.glob("Pulumi.*.yaml")]
    return sorted(n for n in names if not n.startswith("onprem-"))


def step_named(job: dict[str, Any], name: str) -> dict[str, Any]:
    found = [s for s in job["steps"] if s.get("name") == name]
    assert len(found) == 1, f"expected one step named {name!r}, found {len(found)}"
    return dict(found[0])


def run_script(step: dict[str, Any], cwd: Path, env: dict[str, str]) -> tuple[int, dict[str, str], str]:
    """Run a `shell: python`-like step's script for real; returns exit code, GITHUB_OUTPUT entries, stderr."""
    script = cwd / "step.py"
    script.write_text(step["run"])
    outputs = cwd / "github_output"
    outputs.write_text("")
    result = subprocess.run(
        [sys.executable, str(script)],
        check=False,
        cwd=cwd,
        env={**os.environ, **env, "GITHUB_OUTPUT": str(outputs)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    pairs = (line.split("=", 1) for line in outputs.read_text().splitlines() if line)
    return result.returncode, dict(pairs), result.stderr


def read_stack(stack: str, root: Path = ROOT, tmp: Path | None = None) -> dict[str, str]:
    """The preview job's outputs for a stack file: the real `Read the stack file` step run on it."""
    step = step_named(workflow("stack.yml")["jobs"]["preview"], "Read the stack file")
    assert tmp is not None
    if root != tmp:
        shutil.copy(root / f"Pulumi.{stack}.yaml", tmp)
    code, outputs, stderr = run_script(step, tmp, {"STACK": stack})
    assert code == 0, f"reading Pulumi.{stack}.yaml failed: {stderr.strip()}"
    return outputs


def ancestors(jobs: dict[str, Any], name: str) -> set[str]:
    needs = jobs[name].get("needs", [])
    direct = {needs} if isinstance(needs, str) else set(needs)
    return direct.union(*(ancestors(jobs, n) for n in direct)) if direct else set()


def runs(job: dict[str, Any]) -> list[tuple[str, str]]:
    """(working directory, script) of each `run:` step, in order."""
    return [(s.get("working-directory", "."), s["run"]) for s in job["steps"] if "run" in s]


def first(job: dict[str, Any], needle: str, cwd: str | None = None) -> int:
    """Index among the job's `run:` steps of the first that contains `needle` (and runs in `cwd`)."""
    for index, (where, script) in enumerate(runs(job)):
        if needle in script and (cwd is None or where == cwd):
            return index
    raise AssertionError(f"no step runs {needle!r}" + (f" in {cwd}" if cwd else ""))


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
            {"name": "ab", "variants": {"weights": {"1": 90, "2": 10}}},
            {"name": "single", "variants": {"weights": {"1": 100}}},
        ],
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


def test_deploy_locks_each_stack_and_isolates_failures() -> None:
    job = workflow("deploy.yml")["jobs"]["stack"]
    assert job["uses"] == "./.github/workflows/stack.yml", "each stack runs the one reusable pipeline"
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
    """Preview, gate, approval environment, infra, platform on the CodeBuild runner, smoke, canary."""
    jobs = workflow("stack.yml")["jobs"]
    outputs = read_stack(stack, tmp=tmp_path)
    region = json.loads(outputs["runners"])["include"][0]["region"]
    assert outputs["runner"] == f"{stack}-{region}-deploy-runner", f"{stack}: runner {outputs['runner']}"
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
    platform = jobs["platform"]
    label = platform["runs-on"].replace("${{ needs.preview.outputs.runner }}", outputs["runner"])
    assert label == CODEBUILD_LABEL.format(outputs["runner"]), f"{stack}: platform runs on {label}"
    assert first(platform, "policy check") < first(platform, "pulumi up", cwd="stacks/platform"), (
        f"{stack}: the platform project must be gated, then deployed"
    )
    smoke = runs(jobs["smoke"])[first(jobs["smoke"], "servectl loadtest")][1]
    assert "--profile smoke" in smoke and "--slo" in smoke, f"the smoke test must gate on SLOs: {smoke}"
    assert "servectl experiment analyze" in runs(jobs["canary"])[first(jobs["canary"], "analyze")][1]


def test_read_stack_outputs(tmp_path: Path) -> None:
    write_fixture(tmp_path, "eu-test", {})
    out = read_stack("eu-test", root=tmp_path, tmp=tmp_path)
    assert out["region"] == "eu-central-1", f"the primary region is the first listed: {out}"
    assert out["backend"] == "s3://acme-eu-state?region=eu-central-1", out
    assert out["secrets_provider"] == "awskms://alias/acme-eu-state?region=eu-central-1", out
    role = "arn:aws:iam::123456789012:role/eu-test-{}-deploy"
    assert json.loads(out["runners"]) == {
        "include": [
            {"region": r, "runner": f"eu-test-{r}-deploy-runner", "deploy_role": role.format(r)}
            for r in ("eu-central-1", "eu-west-1")
        ]
    }, "per region a runner (CodeBuild project <stack>-<region>-deploy-runner) and the role its jobs assume"
    assert json.loads(out["models"]) == ["ab"], "only models with a candidate version get a canary analysis"


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
    ],
    ids=["no-state", "hosted-backend", "backend-abroad", "passphrase", "kms-abroad", "no-account", "onprem"],
)
def test_read_stack_fails_closed(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    write_fixture(tmp_path, "bad", changes)
    step = step_named(workflow("stack.yml")["jobs"]["preview"], "Read the stack file")
    code, outputs, stderr = run_script(step, tmp_path, {"STACK": "bad"})
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


def test_codebuild_jobs_use_the_runner_role_and_never_share_a_queue() -> None:
    jobs = workflow("stack.yml")["jobs"]
    codebuild = [n for n, j in jobs.items() if str(j["runs-on"]).startswith("codebuild-")]
    assert codebuild == ["platform", "smoke", "canary"], f"in-VPC jobs: {codebuild}"
    for name in codebuild:
        uses = [str(s.get("uses", "")) for s in jobs[name]["steps"]]
        assert not any("configure-aws-credentials" in u for u in uses), f"{name}: the runner's role suffices"
        assert "id-token" not in jobs[name]["permissions"], f"{name} must not ask for an OIDC token"
        if any("pulumi " in script for _, script in runs(jobs[name])):
            assert jobs[name]["env"].get("AWS_PROFILE") == "deploy", (
                f"{name}: state is reached as the deploy role"
            )
            assert "credential_source = EcsContainer" in runs(jobs[name])[0][1], (
                f"{name}: no deploy profile first"
            )
    # Jobs with the same label must never be queued together (AWS: a runner could take the other's job).
    for later in codebuild[1:]:
        assert set(codebuild[: codebuild.index(later)]) <= ancestors(jobs, later), f"{later} could overlap"


def test_no_hosted_pulumi_backend() -> None:
    jobs = workflow("stack.yml")["jobs"]
    for name in all_workflows():
        text = (WORKFLOWS / name).read_text()
        assert "PULUMI_ACCESS_TOKEN" not in text, f"{name} logs in to a hosted backend"
    for job_name, job in jobs.items():
        for step in job["steps"]:
            if "pulumi " in step.get("run", ""):
                env = {**job.get("env", {}), **step.get("env", {})}
                assert "PULUMI_BACKEND_URL" in env, f"{job_name}/{step.get('name')}: no state backend set"


def pin_problems(text: str) -> list[str]:
    """`uses:` lines neither local, nor a full commit SHA with a version comment, nor allow-listed."""
    problems = []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        found = re.match(r"\s*(?:-\s+)?uses:\s*(\S+)(.*)$", line)
        if not found or found.group(1).startswith("./"):
            continue
        action, _, ref = found.group(1).partition("@")
        if re.fullmatch(r"[0-9a-f]{40}", ref) and re.search(r"#\s*v\d", found.group(2)):
            continue
        if action in TAG_PINNED and re.fullmatch(r"v\d+", ref) and lines[index - 1].strip().startswith("#"):
            continue
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
        uses = " ".join(str(s.get("uses", "")) for s in job.get("steps", []))
        if granted.get("security-events") == "write":
            assert "upload-sarif" in uses, f"{name}/{job_name}: security-events: write without a SARIF upload"
        if granted.get("id-token") == "write":
            assert "configure-aws-credentials" in uses, f"{name}/{job_name}: id-token: write without OIDC"
    if name == "stack.yml":
        assert data["jobs"]["approve"]["permissions"] == {}, "the approval job holds no credentials"


def test_caller_grants_what_the_pipeline_needs() -> None:
    """A called workflow's jobs get at most what the caller grants: grant exactly their union."""
    union: dict[str, str] = {}
    for job in workflow("stack.yml")["jobs"].values():
        for scope, level in job["permissions"].items():
            union[scope] = "write" if "write" in (level, union.get(scope)) else level
    granted = workflow("deploy.yml")["jobs"]["stack"]["permissions"]
    assert granted == union, f"deploy.yml grants {granted}, the pipeline's jobs need {union}"


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
    for stack in ("eu-prod", "onprem-lab"):
        (tmp_path / f"Pulumi.{stack}.yaml").write_text("config: {}\n")
    step = step_named(workflow("policy.yml")["jobs"]["stacks"], "Every stack file, both layers "
                      "(onprem-* stacks have only the platform layer)")  # fmt: skip
    code, outputs, stderr = run_script(step, tmp_path, {})
    assert code == 0, stderr
    assert json.loads(outputs["matrix"])["include"] == [
        {"stack": "eu-prod", "layer": "infra"},
        {"stack": "eu-prod", "layer": "platform"},
        {"stack": "onprem-lab", "layer": "platform"},
    ], "every AWS stack is gated on both layers, an onprem stack on its platform layer only"


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
