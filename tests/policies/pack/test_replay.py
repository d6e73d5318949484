"""The pack in its own virtualenv, with pulumi_policy's real resource classes, fed a plan's resources."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from policies.normalize import load_plan
from tests.policies.conftest import FIXTURES, REPO
from tests.policies.pack.inputs import PREVIEW_FIXTURES, assert_same_input, write_stack_file

PACK_PYTHON = REPO / ".tools" / "policy-pack-venv" / "bin" / "python"


@pytest.fixture(scope="module")
def pack_python(opa_bin: Path) -> Path:
    """The pack's interpreter; its absence is a failure (`make setup` builds it)."""
    assert PACK_PYTHON.is_file(), (
        f"the policy pack's virtualenv is missing at {PACK_PYTHON}: run `make setup`"
    )
    return PACK_PYTHON


def replay(python: Path, plan: Path, project_dir: Path, *options: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(python), "-m", "policies.pack.replay", str(plan), "--project-dir", str(project_dir), *options]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("fixture", PREVIEW_FIXTURES)
def test_pack_input_with_pulumi_policy_classes_matches_the_cli_input(
    pack_python: Path, tmp_path: Path, fixture: str
) -> None:
    cli = load_plan(FIXTURES / fixture)
    write_stack_file(tmp_path, cli)
    done = replay(pack_python, FIXTURES / fixture, tmp_path, "--input")
    assert done.returncode == 0, done.stderr
    assert_same_input(cli, json.loads(done.stdout))


def test_clean_plan_has_no_violation(pack_python: Path, tmp_path: Path) -> None:
    # No stack file here: the jurisdiction of us-prod comes from the policy data.
    done = replay(pack_python, FIXTURES / "us-prod.platform.preview.json", tmp_path)
    assert (done.returncode, done.stdout) == (0, ""), done.stderr


def test_bad_plan_violates_exactly_its_rules(pack_python: Path, tmp_path: Path) -> None:
    done = replay(pack_python, FIXTURES / "bad-uae-prod-insecure-cluster.preview.json", tmp_path)
    assert done.returncode == 1, done.stderr
    violations = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(v["message"].split(" ")[0] for v in violations) == [
        "AUD-001",
        "AUD-003",
        "ENC-003",
        "ENC-004",
        "NET-001",
    ]
    assert all(v["urn"].startswith("urn:pulumi:uae-prod::") for v in violations)


def test_jurisdiction_from_the_stack_file(pack_python: Path, tmp_path: Path) -> None:
    doc = json.loads((FIXTURES / "uae-prod.infra.preview.json").read_text())
    del doc["config"]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(doc))
    (tmp_path / "Pulumi.uae-prod.yaml").write_text("config:\n  model-serving:jurisdiction: AE\n")
    done = replay(pack_python, plan, tmp_path)
    assert (done.returncode, done.stdout) == (0, ""), done.stderr


def test_unreadable_plan_exits_2(pack_python: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text("{}")
    done = replay(pack_python, plan, tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {plan}: "), done.stderr


def test_shipped_plans_pass_the_pack(pack_python: Path, shipped_plan_files: dict[str, Path]) -> None:
    assert len(shipped_plan_files) >= 4, f"shipped plans found: {sorted(shipped_plan_files)}"
    for stack, plan in shipped_plan_files.items():
        done = replay(pack_python, plan, REPO)
        assert (done.returncode, done.stdout) == (0, ""), f"{stack}: {done.stdout}{done.stderr}"
