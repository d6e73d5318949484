"""`servectl experiment` with `--cloudwatch-endpoint` and `--endpoint`: the options' rules, and an analysis
of a SageMaker endpoint's metrics in moto through the command line."""

import json
import math
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from servectl.cli import cli
from servectl.experiments import log
from servectl.experiments.run import STARTED, _held
from tests.servectl.experiments.aws_emulator import REGION, put_minutes

MODEL = "tabular-classifier"


@pytest.mark.parametrize(
    ("options", "refusal"),
    [
        (["--prometheus", "http://127.0.0.1:1", "--cloudwatch-endpoint", "ep", "--stack", "smb-eu"],
         "exactly one of --prometheus URL or --cloudwatch-endpoint NAME"),
        (["--stack", "eu-prod"], "exactly one of --prometheus URL or --cloudwatch-endpoint NAME"),
        (["--cloudwatch-endpoint", "ep", "--endpoint", "ep", "--stack", "eu-prod"],
         "--endpoint goes with --stack smb-..."),
        (["--cloudwatch-endpoint", "ep", "--endpoint", "other", "--stack", "smb-eu"],
         "--cloudwatch-endpoint ep is not --endpoint other"),
    ],
)  # fmt: skip
def test_the_source_and_target_options_are_checked_before_anything_runs(
    tmp_path: Path, options: list[str], refusal: str
) -> None:
    args = ["experiment", "step", "--model", MODEL, "--region", REGION, "--log", str(tmp_path / "l.jsonl")]
    result = CliRunner().invoke(cli, [*args, *options])
    assert result.exit_code == 2 and refusal in result.output, result.output
    assert not (tmp_path / "l.jsonl").exists()


def test_analyze_reads_the_endpoints_minutes_and_holds_on_feedback_the_stack_requires(
    aws: str, tmp_path: Path
) -> None:
    """smb-eu's rollout block marks no metric optional: conversion, value and accuracy (never in
    CloudWatch) hold promotion as they do on Prometheus; latency, not measurable there, does not."""
    now = time.time()
    start = math.floor((now - 1200) / 60) * 60
    put_minutes("ep-cli", "1", {start + 60 * i: (900, 0, 1) for i in range(20)})
    put_minutes("ep-cli", "2", {start + 60 * i: (100, 0, 0) for i in range(20)})
    path = tmp_path / "log.jsonl"
    log.append(path, _held(MODEL, ("1", "2"), {"1": 90, "2": 10}, (start, start, start), [STARTED], 0))
    args = ["experiment", "analyze", "--cloudwatch-endpoint", "ep-cli", "--region", REGION, "--model", MODEL,
            "--stack", "smb-eu", "--log", str(path), "--json"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)
    assert entry["decision"] == "hold", entry["reasons"]
    assert any(r.startswith("conversion: not measured yet") for r in entry["reasons"]), entry["reasons"]
    assert not any(r.startswith("latency") for r in entry["reasons"]), entry["reasons"]
    counted = entry["window"]["experiment_counted"]
    assert counted["from"] == start and counted["to"] <= now - 180, (counted, now)
    minutes = (counted["to"] - counted["from"]) / 60
    assert entry["counts"]["2"]["requests"] == 100 * minutes, (entry["counts"], minutes)
    assert entry["counts"]["1"]["errors"] == minutes, entry["counts"]


def test_an_smb_stack_reads_its_models_endpoint_by_the_stacks_name_for_it(aws: str, tmp_path: Path) -> None:
    """Without --prometheus or --cloudwatch-endpoint, `--stack smb-eu` analyses the endpoint the stack makes
    for the model (stacks.settings_smb.endpoint_name), in CloudWatch; metrics of another endpoint are not
    read (the first analysis of that endpoint holds on minutes not published)."""
    now = time.time()
    start = math.floor((now - 1200) / 60) * 60
    put_minutes(f"smb-eu-{MODEL}", "1", {start + 60 * i: (900, 0, 1) for i in range(20)})
    put_minutes(f"smb-eu-{MODEL}", "2", {start + 60 * i: (100, 0, 0) for i in range(20)})
    path = tmp_path / "log.jsonl"
    log.append(path, _held(MODEL, ("1", "2"), {"1": 90, "2": 10}, (start, start, start), [STARTED], 0))
    args = ["experiment", "analyze", "--region", REGION, "--model", MODEL, "--stack", "smb-eu",
            "--log", str(path), "--json"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)
    minutes = (entry["window"]["experiment_counted"]["to"] - start) / 60
    assert minutes > 0 and entry["counts"]["2"]["requests"] == 100 * minutes, (entry["counts"], minutes)
