"""The project's own images in the deploy pipeline: built once per run (images.yml) and tagged by their
sources, kept when the stack's registry already has those sources' image, their digests put in every stack
job's stack file, pushed by infra to the primary region's ECR and awaited in the other regions.

The scripts run for real: the digests are computed by the pinned crane from `docker save`-style tarballs made
here, the source tags from a git index made here, and the infra step pushes to a crane registry on loopback,
which plays the region's ECR. What this proves that reading the YAML cannot: the digest the images job
records is the one the push writes, so the stacks reference exactly the image that is in the registry.
"""

import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from tests.ci.conftest import (
    BASH,
    ROOT,
    executable,
    plain_env,
    run_script,
    runs,
    step_named,
    workflow,
)
from tests.crane import CRANE

USE_IMAGES = "Put this run's image digests in the stack file"
STACK_JOBS = ["preview", "infra", "platform"]
"""The jobs that read the stack file's images: each must see this run's."""
PUSH = "Push the images to the primary region's ECR"
KEEP = "Keep the images already in the registry"
WAIT = "Wait for the serving image in the other regions"
RUNNER_DIGEST = "sha256:" + "a" * 64
SERVING_DIGEST = "sha256:" + "b" * 64
RETRAIN_DIGEST = "sha256:" + "d" * 64


def aws_stacks() -> list[str]:
    """The stacks deploy.yml deploys (smb-* stacks have no deploy runner image: docs/smb.md)."""
    names = [p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in ROOT.glob("Pulumi.*.yaml")]
    return sorted(n for n in names if not n.startswith(("onprem-", "smb-")))


def test_images_are_built_once_before_every_stack() -> None:
    deploy = workflow("deploy.yml")["jobs"]
    assert deploy["images"]["uses"] == "./.github/workflows/images.yml", deploy["images"]
    assert deploy["stack"]["needs"] == "images", "every stack waits for the images of its run"
    passed = ("runner_digest", "serving_digest", "runner_tag", "serving_tag", "retrain_digest", "retrain_tag")
    assert deploy["stack"]["with"] == {
        "stack": "${{ matrix.stack }}",
        **{name: f"${{{{ needs.images.outputs.{name} }}}}" for name in passed},
    }, "each stack gets the digests and source tags the images job recorded"
    assert deploy["smb"]["needs"] == "images", "every smb stack waits for the images of its run too"
    assert deploy["smb"]["with"] == {
        "stack": "${{ matrix.stack }}",
        **{name: f"${{{{ needs.images.outputs.{name} }}}}" for name in ("serving_digest", "serving_tag")},
    }, "an smb stack runs the serving image only: its digest and source tag"
    assert deploy["smb"]["concurrency"] == deploy["stack"]["concurrency"], (
        "one lock per stack, either pipeline"
    )
    inputs = workflow("stack.yml")["on"]["workflow_call"]["inputs"]
    for name in passed:
        assert inputs[name]["required"] is True and inputs[name]["type"] == "string", inputs[name]
    images = workflow("images.yml")
    outputs = images["on"]["workflow_call"]["outputs"]
    job = images["jobs"]["build"]
    steps = {f"{image}_digest": image for image in ("runner", "serving", "retrain")}
    steps |= {f"{image}_tag": f"{image}_tag" for image in ("runner", "serving", "retrain")}
    for name, step_output in steps.items():
        assert outputs[name]["value"] == f"${{{{ jobs.build.outputs.{name} }}}}", outputs[name]
        assert job["outputs"][name] == f"${{{{ steps.digests.outputs.{step_output} }}}}", job["outputs"]


def test_images_job_builds_both_images_and_holds_no_credentials() -> None:
    job = workflow("images.yml")["jobs"]["build"]
    assert job["permissions"] == {"contents": "read"}, "the images job reads the repository, nothing more"
    scripts = "\n".join(script for _, script in runs(job))
    for dockerfile in ("stacks/runner/Dockerfile", "serving_image/Dockerfile"):
        assert f"--file {dockerfile}" in scripts, f"images.yml must build {dockerfile}"
    assert "--file serving_image/Dockerfile --target retrain" in scripts, "and the retrain receiver's image"
    for needle in ("push", "login", "aws "):
        assert needle not in scripts, f"the images job pushes nowhere and logs in nowhere ({needle!r})"
    assert "configure-aws-credentials" not in json.dumps(job), "no cloud identity in the images job"


def test_images_reach_infra_under_one_name() -> None:
    """The tarballs infra pushes are the ones the images job saved: one artifact, the same file names."""
    upload = step_named(workflow("images.yml")["jobs"]["build"], "Keep the images for the stacks")
    download = step_named(workflow("stack.yml")["jobs"]["infra"], "Fetch the images built for this run")
    assert upload["with"]["name"] == download["with"]["name"] == "images", (upload["with"], download["with"])
    assert upload["with"]["path"] == download["with"]["path"] == "images/"
    built, pushed = plain_env("images.yml"), plain_env("stack.yml")
    for tarball in ("RUNNER_TARBALL", "SERVING_TARBALL", "RETRAIN_TARBALL"):
        assert built[tarball] == pushed[tarball], (
            f"{tarball}: saved {built[tarball]}, pushed {pushed[tarball]}"
        )
        assert built[tarball].startswith("images/"), built[tarball]


def test_every_stack_job_uses_this_runs_images() -> None:
    """preview, infra and platform put this run's digests in the stack file before anything reads it."""
    jobs = workflow("stack.yml")["jobs"]
    steps = [step_named(jobs[name], USE_IMAGES) for name in STACK_JOBS]
    assert all(step == steps[0] for step in steps), "one step, the same in every job that reads the images"
    for name in STACK_JOBS:
        names = [s.get("name") for s in jobs[name]["steps"]]
        position = names.index(USE_IMAGES)
        readers = [
            i
            for i, s in enumerate(jobs[name]["steps"])
            if any(cmd in s.get("run", "") for cmd in ("pulumi preview", "pulumi up", "servectl plan"))
        ]
        assert readers and position < min(readers), f"{name}: the images must be in place before {readers}"
    env = workflow("stack.yml")["env"]
    assert env["BUILT_RUNNER_DIGEST"] == "${{ inputs.runner_digest }}", env
    assert env["BUILT_SERVING_DIGEST"] == "${{ inputs.serving_digest }}", env
    assert env["BUILT_RETRAIN_DIGEST"] == "${{ inputs.retrain_digest }}", env
    assert "RUNNER_DIGEST" not in env, "the digests deployed are preview's choice, not the build's"
    preview = jobs["preview"]
    names = [s.get("name") for s in preview["steps"]]
    assert names.index(KEEP) < names.index(USE_IMAGES), "preview chooses the digests, then uses them"
    assert preview["outputs"]["runner_digest"] == "${{ steps.images.outputs.runner }}", preview["outputs"]
    assert preview["outputs"]["serving_digest"] == "${{ steps.images.outputs.serving }}", preview["outputs"]
    assert preview["outputs"]["retrain_digest"] == "${{ steps.images.outputs.retrain }}", preview["outputs"]
    for name in ("infra", "platform"):
        for image in ("runner", "serving", "retrain"):
            assert jobs[name]["env"][f"{image.upper()}_DIGEST"] == (
                f"${{{{ needs.preview.outputs.{image}_digest }}}}"
            ), f"{name} deploys the {image} image preview planned"


def checkout(work: Path) -> None:
    """What a step's script finds in the job's checkout: the virtualenv and the shared scripts."""
    for shared in (".venv", ".github"):
        if not (work / shared).exists():
            (work / shared).symlink_to(ROOT / shared)


def use_images(
    work: Path, stack: str, runner: str, serving: str, retrain: str = RETRAIN_DIGEST
) -> tuple[int, str]:
    step = step_named(workflow("stack.yml")["jobs"]["platform"], USE_IMAGES)
    env = {"STACK": stack, "RUNNER_DIGEST": runner, "SERVING_DIGEST": serving, "RETRAIN_DIGEST": retrain}
    checkout(work)
    code, _, out = run_script(step, work, env, shell=BASH)
    return code, out


def config_of(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text())["config"])


@pytest.mark.parametrize("stack", aws_stacks())
def test_use_images_replaces_the_three_digests_only(stack: str, tmp_path: Path) -> None:
    source = ROOT / f"Pulumi.{stack}.yaml"
    shutil.copy(source, tmp_path)
    code, out = use_images(tmp_path, stack, RUNNER_DIGEST, SERVING_DIGEST)
    assert code == 0, out
    written = tmp_path / source.name
    before, after = config_of(source), config_of(written)
    assert after["model-serving:image"]["runnerDigest"] == RUNNER_DIGEST, after["model-serving:image"]
    assert after["model-serving:image"]["digest"] == SERVING_DIGEST, after["model-serving:image"]
    assert after["model-serving:image"]["retrainDigest"] == RETRAIN_DIGEST, after["model-serving:image"]
    image_before, image_after = before["model-serving:image"], after["model-serving:image"]
    untouched = {
        k: v for k, v in image_before.items() if k not in {"runnerDigest", "digest", "retrainDigest"}
    }
    assert {k: image_after[k] for k in untouched} == untouched, image_after
    assert {k: v for k, v in after.items() if k != "model-serving:image"} == {
        k: v for k, v in before.items() if k != "model-serving:image"
    }, f"{stack}: only the image digests may change"
    changed = [
        (old, new)
        for old, new in zip(source.read_text().splitlines(), written.read_text().splitlines(), strict=True)
        if old != new
    ]
    assert len(changed) == 3, f"{stack}: three lines change, comments and layout stay: {changed}"


@pytest.mark.parametrize(
    ("stack", "runner", "message"),
    [
        ("eu-prod", "sha256:" + "A" * 64, "not image digests"),
        ("eu-prod", "latest", "not image digests"),
        ("onprem-ae", RUNNER_DIGEST, "model-serving:image.runnerDigest"),
    ],
    ids=["upper-case", "a-tag", "no-runner-image"],
)
def test_use_images_fails_closed(stack: str, runner: str, message: str, tmp_path: Path) -> None:
    shutil.copy(ROOT / f"Pulumi.{stack}.yaml", tmp_path)
    original = (tmp_path / f"Pulumi.{stack}.yaml").read_text()
    code, out = use_images(tmp_path, stack, runner, SERVING_DIGEST)
    assert code != 0 and message in out, f"expected a refusal naming {message!r}: {code} {out}"
    assert (tmp_path / f"Pulumi.{stack}.yaml").read_text() == original, "a refused file is left as it was"


def docker_tarball(path: Path, content: bytes) -> None:
    """An image as `docker save` writes it: manifest.json, the config and an uncompressed layer."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("app/data")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()  # fmt: skip
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": ["image:test"], "Layers": ["layer.tar"]}])
    with tarfile.open(path, mode="w") as tar:
        for name, data in (
            ("layer.tar", layer_bytes),
            (config_name, config),
            ("manifest.json", manifest.encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


SOURCE_FILES = ("stacks/runner/Dockerfile", "constraints.txt", "serving_image/Dockerfile", "servectl/cli.py",
                "pyproject.toml", "README.md")  # fmt: skip
"""A checkout in miniature: the files the images are built from."""


def record(work: Path) -> dict[str, str]:
    """The images job's `Record the digests` step run in `work`; returns its outputs."""
    step = step_named(workflow("images.yml")["jobs"]["build"], "Record the digests")
    summary = work.parent / "summary.md"
    env = {**plain_env("images.yml"), "GITHUB_STEP_SUMMARY": str(summary)}
    code, outputs, out = run_script(step, work, env, shell=BASH)
    assert code == 0, out
    assert outputs["runner"] in summary.read_text(), "the run's summary records the digests"
    return outputs


def git_add(work: Path, *names: str) -> None:
    subprocess.run(["git", "add", *names], cwd=work, check=True, timeout=30)


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A checkout with the images job's tarballs, and the outputs of its `Record the digests` step."""
    work = tmp_path / "work"
    (work / "images").mkdir(parents=True)
    (work / ".tools").symlink_to(ROOT / ".tools")
    checkout(work)
    for name in SOURCE_FILES:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(f"{name}\n")
    subprocess.run(["git", "init", "-q"], cwd=work, check=True, timeout=30)
    git_add(work, *SOURCE_FILES)
    env = plain_env("images.yml")
    docker_tarball(work / env["RUNNER_TARBALL"], b"the runner image")
    docker_tarball(work / env["SERVING_TARBALL"], b"the serving image")
    docker_tarball(work / env["RETRAIN_TARBALL"], b"the retrain image")
    outputs = record(work)
    assert len({outputs["runner"], outputs["serving"], outputs["retrain"]}) == 3, outputs
    return work, outputs


def test_source_tags_name_what_each_image_is_built_from(built: tuple[Path, dict[str, str]]) -> None:
    work, first = built
    for tag in (first["runner_tag"], first["serving_tag"]):
        assert re.fullmatch(r"src-[0-9a-f]{64}", tag), tag
    assert record(work) == first, "the same sources give the same tags"
    (work / "stacks/runner/Dockerfile").write_text("a new runner\n")
    git_add(work, "stacks/runner/Dockerfile")
    after = record(work)
    assert after["runner_tag"] != first["runner_tag"], "a changed runner Dockerfile is a new runner image"
    assert after["serving_tag"] == first["serving_tag"], "the serving image's sources did not change"
    assert after["retrain_tag"] == after["serving_tag"], "the retrain target is built from the same sources"
    (work / "constraints.txt").write_text("pulumi==0\n")
    git_add(work, "constraints.txt")
    both = record(work)
    assert both["runner_tag"] != after["runner_tag"] and both["serving_tag"] != after["serving_tag"], (
        "constraints.txt goes into both images"
    )


@pytest.mark.parametrize(
    ("dockerfile", "sources"),
    [
        ("stacks/runner/Dockerfile", "RUNNER_SOURCES"),
        ("serving_image/Dockerfile", "SERVING_SOURCES"),
        ("serving_image/Dockerfile", "RETRAIN_SOURCES"),
    ],
)
def test_sources_cover_what_the_dockerfile_copies(dockerfile: str, sources: str) -> None:
    listed = plain_env("images.yml")[sources].split()
    copied = [str(Path(dockerfile).parent)]
    for item in DockerfileParser(path=str(ROOT / dockerfile)).structure:
        if item["instruction"] == "COPY" and "--from" not in item["value"]:
            copied += item["value"].split()[:-1]
    uncovered = [c for c in copied if not any(c == s or c.startswith(f"{s}/") for s in listed)]
    assert uncovered == [], f"{dockerfile} is built from {uncovered}, which its source tag ignores"


def push_env(work: Path, registry: str, runner: str, serving: str, retrain: str) -> dict[str, str]:
    bin_dir = work.parent / "bin"
    bin_dir.mkdir(exist_ok=True)
    executable(bin_dir / "aws", "#!/bin/sh\necho not-a-real-password\n")
    return {
        **plain_env("stack.yml"),
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "DOCKER_CONFIG": str(work.parent / "docker"),
        "GITHUB_STEP_SUMMARY": str(work.parent / "push-summary.md"),
        "RUNNER_TAG": "src-" + "1" * 64,
        "SERVING_TAG": "src-" + "2" * 64,
        "RETRAIN_TAG": "src-" + "2" * 64,
        "RUNNER_IMAGE": f"{registry}/eu-test/model-serving/deploy-runner",
        "SERVING_IMAGE": f"{registry}/eu-test/model-serving/server",
        "RETRAIN_IMAGE": f"{registry}/eu-test/model-serving/retrain",
        "RUNNER_DIGEST": runner,
        "SERVING_DIGEST": serving,
        "RETRAIN_DIGEST": retrain,
    }


def test_recorded_digest_is_the_pushed_digest(built: tuple[Path, dict[str, str]], registry: str) -> None:
    work, digests = built
    step = step_named(workflow("stack.yml")["jobs"]["infra"], PUSH)
    env = push_env(work, registry, digests["runner"], digests["serving"], digests["retrain"])
    code, _, out = run_script(step, work, env, shell=BASH)
    assert code == 0, out
    for image, tag, digest in (
        (env["RUNNER_IMAGE"], env["RUNNER_TAG"], digests["runner"]),
        (env["SERVING_IMAGE"], env["SERVING_TAG"], digests["serving"]),
        (env["RETRAIN_IMAGE"], env["RETRAIN_TAG"], digests["retrain"]),
    ):
        found = subprocess.run([str(CRANE), "digest", f"{image}:{tag}"], check=True, text=True,
                               capture_output=True, timeout=60).stdout.strip()  # fmt: skip
        assert found == digest, f"{image} holds {found}, the stacks reference {digest}"
    assert digests["runner"] in Path(env["GITHUB_STEP_SUMMARY"]).read_text(), "the summary records the push"
    code, _, out = run_script(step, work, env, shell=BASH)
    assert code == 0 and "kept" in out, f"a re-run keeps the images already under their tags: {code} {out}"


def test_push_refuses_a_tag_holding_another_image(built: tuple[Path, dict[str, str]], registry: str) -> None:
    """The registry's image for these sources is not the one the stack was planned with: stop."""
    work, digests = built
    step = step_named(workflow("stack.yml")["jobs"]["infra"], PUSH)
    env = push_env(work, registry, digests["runner"], digests["serving"], digests["retrain"])
    assert run_script(step, work, env, shell=BASH)[0] == 0
    planned = push_env(work, registry, RUNNER_DIGEST, digests["serving"], digests["retrain"])
    code, _, out = run_script(step, work, planned, shell=BASH)
    assert code != 0 and "but the stack was planned with" in out, f"{code} {out}"


def test_push_refuses_an_image_other_than_recorded(built: tuple[Path, dict[str, str]], registry: str) -> None:
    work, digests = built
    step = step_named(workflow("stack.yml")["jobs"]["infra"], PUSH)
    code, _, out = run_script(
        step,
        work,
        push_env(work, registry, RUNNER_DIGEST, digests["serving"], digests["retrain"]),
        shell=BASH,
    )
    assert code != 0 and "not as the digest the images job recorded" in out, f"{code} {out}"


def test_infra_pushes_after_up_and_before_the_platform() -> None:
    jobs = workflow("stack.yml")["jobs"]
    names = [s.get("name") for s in jobs["infra"]["steps"]]
    assert names.index("Deploy infra") < names.index(PUSH) < names.index(WAIT), (
        "infra creates the repositories, then the images are pushed, then replicated"
    )
    assert "infra" in jobs["platform"]["needs"], "the platform deploys once the images are in the registry"


def wait(tmp_path: Path, appears: dict[str, int]) -> tuple[int, str, list[str]]:
    """The replication wait run for real; `appears` is after how many asks each region has the image."""
    step = step_named(workflow("stack.yml")["jobs"]["infra"], WAIT)
    calls = tmp_path / "calls"
    executable(
        tmp_path / "aws",
        f"""#!/bin/bash
region=""; while [ $# -gt 0 ]; do [ "$1" = --region ] && region=$2; shift; done
echo "$region" >> {calls}
asked=$(grep -c "^$region$" {calls})
case "$region" in {" ".join(f'{r}) [ "$asked" -ge {n} ] ;;' for r, n in appears.items())} *) exit 1 ;; esac
""",
    )
    regions = {"include": [{"region": r} for r in ("eu-central-1", "eu-west-1", "eu-north-1")]}
    env = {
        "PATH": f"{tmp_path}:/usr/bin:/bin",
        "SERVING_IMAGE": "123456789012.dkr.ecr.eu-central-1.amazonaws.com/eu-test/model-serving/server",
        "SERVING_DIGEST": SERVING_DIGEST,
        "PRIMARY": "eu-central-1",
        "REGIONS": json.dumps(regions),
        "TRIES": "3",
        "INTERVAL": "0",
    }
    code, _, out = run_script(step, tmp_path, env, shell=BASH)
    return code, out, calls.read_text().split() if calls.exists() else []


def test_wait_until_every_other_region_has_the_image(tmp_path: Path) -> None:
    code, out, calls = wait(tmp_path, {"eu-west-1": 1, "eu-north-1": 3})
    assert code == 0, out
    assert calls == ["eu-west-1", "eu-north-1", "eu-north-1", "eu-north-1"], (
        f"each other region is asked until it has the image, the primary never: {calls}"
    )


def test_wait_fails_on_a_region_that_never_gets_the_image(tmp_path: Path) -> None:
    code, out, calls = wait(tmp_path, {"eu-west-1": 1, "eu-north-1": 99})
    assert code != 0 and "has not replicated to eu-north-1" in out, f"{code} {out}"
    assert calls.count("eu-north-1") == 3, f"it gives up after TRIES asks: {calls}"


def keep(tmp_path: Path, answers: dict[str, tuple[int, str]]) -> tuple[int, dict[str, str], str, str]:
    """The preview's choice of digests run for real, with an `aws` answering per repository."""
    step = step_named(workflow("stack.yml")["jobs"]["preview"], KEEP)
    cases = " ".join(
        f"*{repo}*) echo '{text}' {'' if code == 0 else '>&2'}; exit {code} ;;"
        for repo, (code, text) in answers.items()
    )
    executable(tmp_path / "aws", f'#!/bin/bash\ncase "$*" in {cases} *) exit 255 ;; esac\n')
    checkout(tmp_path)
    github_env = tmp_path / "github_env"
    registry = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/eu-test/model-serving"
    env = {
        "PATH": f"{tmp_path}:/usr/bin:/bin",
        "RUNNER_TEMP": str(tmp_path),
        "GITHUB_ENV": str(github_env),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "RUNNER_IMAGE": f"{registry}/deploy-runner",
        "SERVING_IMAGE": f"{registry}/server",
        "RETRAIN_IMAGE": f"{registry}/retrain",
        "RUNNER_TAG": "src-" + "1" * 64,
        "SERVING_TAG": "src-" + "2" * 64,
        "RETRAIN_TAG": "src-" + "2" * 64,
        "BUILT_RUNNER_DIGEST": RUNNER_DIGEST,
        "BUILT_SERVING_DIGEST": SERVING_DIGEST,
        "BUILT_RETRAIN_DIGEST": RETRAIN_DIGEST,
    }
    code, outputs, out = run_script(step, tmp_path, env, shell=BASH)
    return code, outputs, out, github_env.read_text() if github_env.exists() else ""


KEPT = "sha256:" + "c" * 64
ABSENT = (254, "An error occurred (ImageNotFoundException) when calling the DescribeImages operation")
NO_REPOSITORY = (254, "An error occurred (RepositoryNotFoundException) when calling the DescribeImages")


def test_keep_the_registrys_image_of_unchanged_sources(tmp_path: Path) -> None:
    code, outputs, out, github_env = keep(
        tmp_path, {"deploy-runner": (0, KEPT), "server": ABSENT, "retrain": ABSENT}
    )
    assert code == 0, out
    assert outputs == {"runner": KEPT, "serving": SERVING_DIGEST, "retrain": RETRAIN_DIGEST}, (
        "the registry's runner image is kept; the serving image, not there yet, is this run's build"
    )
    assert f"RUNNER_DIGEST={KEPT}" in github_env and f"SERVING_DIGEST={SERVING_DIGEST}" in github_env, (
        "the rest of the preview job plans with the digests chosen"
    )


def test_first_deploy_has_no_repository_yet(tmp_path: Path) -> None:
    code, outputs, out, _ = keep(
        tmp_path, {"deploy-runner": NO_REPOSITORY, "server": NO_REPOSITORY, "retrain": NO_REPOSITORY}
    )
    assert code == 0, out
    assert outputs == {"runner": RUNNER_DIGEST, "serving": SERVING_DIGEST, "retrain": RETRAIN_DIGEST}, outputs


def test_keep_fails_when_the_registry_cannot_be_read(tmp_path: Path) -> None:
    denied = (254, "An error occurred (AccessDeniedException) when calling the DescribeImages operation")
    code, outputs, out, _ = keep(tmp_path, {"deploy-runner": denied, "server": ABSENT, "retrain": ABSENT})
    assert code != 0 and "AccessDeniedException" in out, f"an unreadable registry is no absent image: {out}"
    assert outputs == {}, "no digests are chosen"
