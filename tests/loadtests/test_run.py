"""Running load tests: command lines as pure functions, and real runs against the served bundled models:
the gate passes with lax thresholds, fails (exit 1) with impossible ones, holds with 2 workers, and
configuration errors exit 2 naming the key. The CI smoke step's options (a bearer token from the
environment, `--models`, the deploy gates) run for real too: the server's access log shows the token
arrived over both protocols, and no report file holds it."""

import json
import secrets
from pathlib import Path

import pytest
from click.testing import CliRunner

from loadtests.config import ConfigError
from loadtests.profiles import load_profile
from loadtests.run import LoadTest, check, commands, free_port, unreachable, user_classes
from loadtests.slo import BUNDLED_SLO
from servectl.cli import cli


def test_commands_for_one_process_and_for_workers(tmp_path: Path) -> None:
    smoke = load_profile("smoke")
    test = LoadTest(target="http://127.0.0.1:1", grpc_target="127.0.0.1:2", out=tmp_path)
    alone, workers = commands(test, smoke, 5557)
    assert workers == [] and "--master" not in alone and alone[-2:] == ["RestUser", "GrpcUser"], alone
    assert "--csv-full-history" in alone and str(tmp_path / "locust.html") in alone, alone
    master, workers = commands(LoadTest(target="http://127.0.0.1:1", out=tmp_path, workers=2), smoke, 5557)
    assert master[-1] == "RestUser", "no gRPC target, no gRPC users"
    assert master[master.index("--master-bind-host") + 1] == "127.0.0.1", "the master listens on loopback"
    assert len(workers) == 2 and all("--worker" in w and "5557" in w for w in workers), workers


DEPLOY_SLO = BUNDLED_SLO.with_name("slo-deploy.yaml")
TOKEN_ENV = "LOADTEST_TEST_TOKEN"


def test_commands_name_the_token_variable_never_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = secrets.token_urlsafe(24)
    monkeypatch.setenv(TOKEN_ENV, token)
    test = LoadTest(target="http://127.0.0.1:1", out=tmp_path, workers=2, models=("tabular-classifier",),
                    slo_file=DEPLOY_SLO, bearer_token_env=TOKEN_ENV)  # fmt: skip
    profile, checked = check(test)
    assert checked == token and profile.traffic.models == {"tabular-classifier": 3.0}, profile.traffic
    master, workers = commands(test, profile, 5557)
    for command in (master, *workers):
        assert token not in " ".join(command), "the token must travel in the environment, not in argv"
        assert command[command.index("--bearer-token-env") + 1] == TOKEN_ENV, command
        assert command[command.index("--load-models") + 1] == "tabular-classifier", command


def test_user_classes_need_a_weight_and_a_target() -> None:
    smoke = load_profile("smoke")
    assert user_classes(smoke, None) == ["RestUser"] and user_classes(smoke, "h:1") == [
        "RestUser",
        "GrpcUser",
    ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"target": "127.0.0.1:8080"}, "--target: expected http"),
        ({"grpc_target": "localhost"}, "--grpc-target: expected host:port"),
        ({"workers": -1}, "--workers: expected 0 or more"),
        ({"profile": "nope"}, "no profile 'nope'"),
    ],
)
def test_check_refuses_bad_settings(changes: dict[str, object], message: str) -> None:
    test = LoadTest(**{"target": "http://127.0.0.1:1", **changes})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        check(test)


def invoke(
    served: tuple[str, str], files: dict[str, Path], slo: str, out: Path, *extra: str
) -> tuple[int, str]:
    http, grpc = served
    args = ["loadtest", "--target", http, "--grpc-target", grpc, "--profile", "quick",
            "--profiles", str(files["profiles"]), "--slo", str(files[slo]),
            "--out", str(out), *extra]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.output


@pytest.mark.slow
def test_lax_gates_pass_and_the_report_is_written(
    served: tuple[str, str], files: dict[str, Path], tmp_path: Path
) -> None:
    code, output = invoke(served, files, "lax", tmp_path)
    assert code == 0, output
    assert "SLO gates: all 7 passed" in output, output
    for name in (
        "summary.md",
        "locust.html",
        "locust_stats.csv",
        "latency.png",
        "throughput.png",
        "timeline.csv",
    ):
        assert (tmp_path / name).stat().st_size > 0, f"{name} missing from the report"
    gates = json.loads((tmp_path / "gates.json").read_text())
    measured = gates["measured"]
    assert measured["overall"]["failures"] == 0, measured["overall"]
    assert {"tabular-classifier v1", "tabular-classifier v2", "tabular-classifier-int8 v1"} <= measured.keys()
    stats = (tmp_path / "locust_stats.csv").read_text()
    assert "gRPC,tabular-classifier v1" in stats and "POST,tabular-classifier v1" in stats, (
        "both protocols ran"
    )


@pytest.mark.slow
def test_impossible_gates_fail_with_exit_1(
    served: tuple[str, str], files: dict[str, Path], tmp_path: Path
) -> None:
    code, output = invoke(served, files, "impossible", tmp_path)
    assert code == 1, output
    assert "SLO gates: 2 of 2 failed: overall min_requests, overall min_rps" in output, output
    assert "FAIL" in (tmp_path / "summary.md").read_text().splitlines()[0], (
        "the summary leads with the verdict"
    )


@pytest.mark.slow
def test_two_workers_under_the_same_gates(
    served: tuple[str, str], files: dict[str, Path], tmp_path: Path
) -> None:
    code, output = invoke(served, files, "lax", tmp_path, "--workers", "2")
    assert code == 0, output
    assert (tmp_path / "worker-1.log").exists() and (tmp_path / "worker-2.log").exists(), "two workers ran"
    gates = json.loads((tmp_path / "gates.json").read_text())
    assert gates["measured"]["overall"]["requests"] >= 10, gates["measured"]["overall"]


def test_configuration_errors_exit_2_naming_the_key(files: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("overall:\n  p95ms: 100\n")
    result = CliRunner().invoke(cli, ["loadtest", "--slo", str(bad), "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert f"{bad}: overall.p95ms: unknown key" in result.output, result.output
    bad.write_text("quick:\n  shape: {kind: constant, users: many, duration_s: 4}\n")
    result = CliRunner().invoke(cli, ["loadtest", "--profiles", str(bad), "--profile", "quick"])
    assert result.exit_code == 2 and "quick.shape.users: expected a number" in result.output, result.output


def test_an_unreachable_target_is_one_line_and_exit_3(tmp_path: Path) -> None:
    port = free_port()
    args = ["loadtest", "--target", f"http://127.0.0.1:{port}", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 3, result.output
    assert f"cannot reach http://127.0.0.1:{port}: " in result.output and "start the server" in result.output


@pytest.mark.parametrize(
    ("environ", "shown"),
    [({}, "is not set"), ({TOKEN_ENV: ""}, "is not set or is empty"), ({TOKEN_ENV: " "}, "is empty")],
)
def test_a_missing_token_variable_is_one_line_and_exit_2(
    environ: dict[str, str], shown: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    args = ["loadtest", "--bearer-token-env", TOKEN_ENV, "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, args, env=environ)
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and TOKEN_ENV in result.output and shown in result.output, (
        f"one line naming the variable: {result.output!r}"
    )


def test_a_token_given_as_the_variable_name_is_refused_unechoed(tmp_path: Path) -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaSJ9.c2ln"
    result = CliRunner().invoke(cli, ["loadtest", "--bearer-token-env", token, "--out", str(tmp_path)])
    assert result.exit_code == 2 and "not the token itself" in result.output, result.output
    assert token not in result.output, "the token was echoed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "tabular-classifier"], "models.tabular-classifier-int8: gates a model this run"),
        (["--profile", "throughput"], "models.tabular-classifier-int8: gates a model this run"),
        (["--models", "nope"], "--models: 'nope' is not in profile smoke's traffic.models"),
    ],
)
def test_gating_a_model_not_loaded_is_exit_2_naming_file_and_key(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = CliRunner().invoke(cli, ["loadtest", "--slo", str(BUNDLED_SLO), "--out", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output, result.output
    if "--models: " not in message:
        assert f"{BUNDLED_SLO}: " in result.output, f"the message names the file: {result.output}"


@pytest.mark.slow
def test_readiness_is_checked_per_model(served: tuple[str, str]) -> None:
    http, _ = served
    assert unreachable(http, ["tabular-classifier", "tabular-classifier-int8"], {}) is None
    problem = unreachable(http, ["tabular-classifier", "not-served"], {})
    assert problem == f"{http}/v2/models/not-served/ready answered 404 (not ready)", problem


def logged_with_caller(access_log: Path, caller: str) -> list[dict[str, object]]:
    """The inference requests the server logged with this caller."""
    records = [json.loads(line) for line in access_log.read_text().splitlines()]
    return [record for record in records if record.get("caller") == caller]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_the_ci_smoke_options_send_the_token_and_never_write_it(
    workers: int,
    served: tuple[str, str],
    server_logs: Path,
    files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = secrets.token_urlsafe(32)
    monkeypatch.setenv(TOKEN_ENV, token)
    out = tmp_path / "report"
    http, grpc = served
    args = ["loadtest", "--target", http, "--grpc-target", grpc, "--profile", "quick",
            "--profiles", str(files["profiles"]), "--slo", str(DEPLOY_SLO), "--out", str(out),
            "--models", "tabular-classifier", "--bearer-token-env", TOKEN_ENV,
            "--workers", str(workers)]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert token not in result.output, "the token reached the console"

    measured = json.loads((out / "gates.json").read_text())["measured"]
    scopes = {"overall", "tabular-classifier", "tabular-classifier v1", "tabular-classifier v2"}
    assert set(measured) == scopes, f"--models loads only tabular-classifier: {sorted(measured)}"
    logged = logged_with_caller(server_logs / "access.log", f"Bearer {token}")
    protocols = {record["protocol"] for record in logged}
    assert protocols == {"rest", "grpc"}, f"the token must arrive over both protocols: {protocols}"
    assert {record["model"] for record in logged} == {"tabular-classifier"}, "only the model loaded"
    assert len(logged) >= measured["overall"]["requests"], (
        f"every request carries the token: {len(logged)} logged, {measured['overall']['requests']} measured"
    )

    written = sorted(path for path in out.rglob("*") if path.is_file())
    assert {"summary.md", "locust.html", "locust_stats.csv", "gates.json", "timeline.csv", "locust.log"} <= {
        path.name for path in written
    }, written
    leaked = [path.name for path in written if token.encode() in path.read_bytes()]
    assert not leaked, f"the token was written to {leaked}"
    assert f"a bearer token from `${TOKEN_ENV}`" in (out / "summary.md").read_text(), "the summary says how"
