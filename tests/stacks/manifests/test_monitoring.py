import json
import shutil
import subprocess

from stacks.manifests.monitoring import RULES_FILE, dashboard, load_rules


def test_rules_file_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make setup` installs Debian's prometheus package"
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES_FILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_pass_promtool_unit_tests() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make setup` installs Debian's prometheus package"
    tests = RULES_FILE.with_name("serving-rules_test.yaml")
    result = subprocess.run(
        [promtool, "test", "rules", tests.name], cwd=tests.parent, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_cover_burn_rates_on_both_slos_and_readiness() -> None:
    alerts = {r["alert"] for g in load_rules()["groups"] for r in g["rules"] if "alert" in r}
    expected = {
        "ModelServingAvailabilityBurnRateFast",
        "ModelServingAvailabilityBurnRateSlow",
        "ModelServingLatencyBurnRateFast",
        "ModelServingLatencyBurnRateSlow",
        "ModelServingModelNotReady",
    }
    assert alerts == expected, f"alerts: {alerts}"


def test_burn_rate_alerts_need_a_long_and_a_short_window() -> None:
    for group in load_rules()["groups"]:
        for rule in group["rules"]:
            if "BurnRate" in rule.get("alert", ""):
                windows = {
                    w for w in ("5m", "30m", "1h", "2h", "6h", "1d") if f"ratio_rate{w} " in rule["expr"]
                }
                assert len(windows) >= 2, f"{rule['alert']} uses windows {windows}"


def test_dashboard_queries_only_contract_metrics_or_recorded_series() -> None:
    text = json.dumps(dashboard())
    assert "serving_model_ready" in text and "serving_queue_depth" in text, (
        "dashboard misses contract metrics"
    )
    records = {r["record"] for g in load_rules()["groups"] for r in g["rules"] if "record" in r}
    used = {
        t["expr"].split("{")[0]
        for p in dashboard()["panels"]
        for t in p["targets"]
        if ":" in t["expr"].split("{")[0]
    }
    assert used <= records, f"dashboard uses unrecorded series {used - records}"
