import difflib
import shutil
from pathlib import Path

import pytest
import yaml

from servectl.experiments.targets import ROOT, StackTarget
from servectl.experiments.weights_file import WeightsFileError, set_model_config_weights, set_stack_weights

STACKS = ["eu-prod", "uae-prod", "us-prod", "smb-eu"]


def _changed(before: str, after: str) -> list[str]:
    return [d for d in difflib.ndiff(before.splitlines(), after.splitlines()) if d[:1] in "+-"]


@pytest.mark.parametrize("stack", STACKS)
def test_stack_weights_change_and_nothing_else(tmp_path: Path, stack: str) -> None:
    path = tmp_path / f"Pulumi.{stack}.yaml"
    shutil.copy(ROOT / path.name, path)
    before = path.read_text()
    set_stack_weights(path, "tabular-classifier", {"1": 75, "2": 25})
    after = path.read_text()
    changed = _changed(before, after)
    assert len(changed) == 4 and all("weights" not in c for c in changed), "\n".join(changed)
    assert [c for c in changed if c.startswith("+")] == ['+           "1": 75', '+           "2": 25'], (
        changed
    )
    target = StackTarget(stack, "tabular-classifier", root=tmp_path)
    assert target.weights() == {"1": 75, "2": 25}, "the stack still parses, with the new weights"


def test_other_models_keep_their_weights(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.eu-prod.yaml"
    shutil.copy(ROOT / path.name, path)
    set_stack_weights(path, "ticket-router", {"1": 40, "2": 60})
    models = {m["name"]: m for m in yaml.safe_load(path.read_text())["config"]["model-serving:models"]}
    assert models["ticket-router"]["variants"]["weights"] == {"1": 40, "2": 60}, (
        "the model written has the new weights"
    )
    assert models["tabular-classifier"]["variants"]["weights"] == {"1": 90, "2": 10}, models[
        "tabular-classifier"
    ]


def test_flow_style_and_comments_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "# top\nvariants:  # the split\n  weights: {1: 90, 2: 10}  # staged\n  sticky: {header: x}\n"
    )
    set_model_config_weights(path, {"1": 50, "2": 50})
    assert path.read_text() == (
        '# top\nvariants:  # the split\n  weights: {"1": 50, "2": 50}  # staged\n  sticky: {header: x}\n'
    )


def test_a_missing_model_is_refused_and_nothing_written(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.eu-prod.yaml"
    shutil.copy(ROOT / path.name, path)
    before = path.read_text()
    with pytest.raises(WeightsFileError, match="'nope' is not in model-serving:models"):
        set_stack_weights(path, "nope", {"1": 100})
    assert path.read_text() == before


def test_stack_rollout_schedule_is_read(tmp_path: Path) -> None:
    schedule = StackTarget("eu-prod", "tabular-classifier").schedule()
    assert schedule is not None and schedule.steps == (5, 25, 50, 100), schedule
    assert StackTarget("eu-prod", "ticket-router").schedule() is None, "no rollout block, no schedule"


def test_stack_step_without_pulumi_prints_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(ROOT / "Pulumi.smb-eu.yaml", tmp_path / "Pulumi.smb-eu.yaml")
    monkeypatch.setenv("PATH", str(tmp_path))
    done = StackTarget("smb-eu", "tabular-classifier", root=tmp_path).apply({"1": 0, "2": 100})
    assert done.endswith("apply with: pulumi up --stack smb-eu"), done
