import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from servectl.cli import cli
from servectl.experiments import log
from servectl.experiments.local_prometheus import free_port


def test_analyze_without_prometheus_fails_in_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    args = ["experiment", "analyze", "--prometheus", url, "--model", "tabular-classifier",
            "--stack", "eu-prod", "--log", str(tmp_path / "log.jsonl")]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: query failed at") and "is Prometheus running?" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_step_needs_exactly_one_target(tmp_path: Path) -> None:
    args = ["experiment", "step", "--prometheus", "http://127.0.0.1:1", "--model", "m"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "exactly one of --stack" in result.output, result.output


def test_other_versions_with_traffic_are_refused(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.yaml").write_text('variants:\n  weights: {"1": 50, "2": 25, "3": 25}\n')
    args = ["experiment", "analyze", "--prometheus", "http://127.0.0.1:1", "--model", "m",
            "--model-repository", str(tmp_path), "--baseline", "1", "--candidate", "3"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "versions ['2'] also take traffic" in result.output, result.output


def test_restart_appends_the_event_that_begins_the_experiment_again(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    args = ["experiment", "restart", "--model", "m", "--candidate", "2", "--log", str(path)]
    refused = CliRunner().invoke(cli, [*args, "--reason", "  "])
    assert refused.exit_code == 1 and "--reason must say why" in refused.output, refused.output
    assert not path.exists(), "nothing is written when refused"
    result = CliRunner().invoke(cli, [*args, "--reason", "a header route sent v1 traffic; removed"])
    assert result.exit_code == 0 and "begins again now" in result.output, result.output
    [entry] = log.read(path)
    assert (entry["event"], entry["model"], entry["candidate"]) == ("restart", "m", "2"), entry
    assert log.current_state([entry], "m", "2").experiment_start == entry["time"], entry


def test_the_controller_retries_an_unreachable_prometheus_and_stops_after_max_analyses(
    tmp_path: Path,
) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.yaml").write_text('variants:\n  weights: {"1": 90, "2": 10}\n')
    args = ["experiment", "controller", "--prometheus", f"http://127.0.0.1:{free_port()}", "--model", "m",
            "--model-repository", str(tmp_path), "--log", str(tmp_path / "log.jsonl"), "--interval", "0.1",
            "--max-analyses", "2", "--metrics-port", str(free_port()), "--json"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    outcomes = json.loads(result.stdout.splitlines()[-1])["outcomes"]
    assert len(outcomes) == 2 and all("is Prometheus running?" in o for o in outcomes), outcomes


@pytest.mark.parametrize(
    ("value", "code", "message"),
    [("payments", 2, "is not NAMESPACE/NAME"), ("payments/m", 1, "not running in a pod")],
)
def test_the_controller_refuses_a_virtual_service_it_cannot_reach(
    value: str, code: int, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    args = ["experiment", "controller", "--prometheus", "http://127.0.0.1:1", "--model", "m",
            "--virtual-service", value, "--max-analyses", "1"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == code and message in result.output, result.output


def test_the_controllers_pid_files_go_with_a_model_repository_only(tmp_path: Path) -> None:
    args = ["experiment", "controller", "--prometheus", "http://127.0.0.1:1", "--model", "m",
            "--stack", "eu-prod", "--pid-file", str(tmp_path / "a.pid"), "--max-analyses", "1"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "--pid-file goes with --model-repository" in result.output, result.output


def _replay_args(tmp_path: Path, *window: str) -> list[str]:
    (tmp_path / "m").mkdir(exist_ok=True)
    (tmp_path / "m" / "config.yaml").write_text('variants:\n  weights: {"1": 95, "2": 5}\n')
    return ["experiment", "analyze", "--prometheus", "http://127.0.0.1:1", "--model", "m",
            "--model-repository", str(tmp_path), "--log", str(tmp_path / "log.jsonl"), *window]  # fmt: skip


@pytest.mark.parametrize(
    ("window", "message"),
    [
        (("--start", "1700000000", "--end", "1690000000"), "--end 1690000000 must be after --start"),
        (("--start", "4102444800"), "'4102444800' is in the future"),
        (("--start", "2026-01-01T00:00:00"), "has no time zone; add Z or an offset"),
        (("--end", "1700000000"), "--end needs --start"),
    ],
)
def test_a_replay_window_that_cannot_be_counted_exits_2_naming_why(
    tmp_path: Path, window: tuple[str, ...], message: str
) -> None:
    result = CliRunner().invoke(cli, _replay_args(tmp_path, *window))
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "log.jsonl").exists(), "nothing is logged"
