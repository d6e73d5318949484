"""Every dashboard query parses as PromQL (promtool); the serving ones read recorded series only."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from stacks.manifests import dashboards
from stacks.manifests.monitoring import load_rules

# Grafana fills these in before Prometheus sees a query.
VARIABLES = {"$model": ".+", "$__rate_interval": "5m"}


def _promtool_check(exprs: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`promtool check rules` on a file holding each expression as a recording rule: it parses every one."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make setup` installs Debian's prometheus package"
    rules = []
    for i, expr in enumerate(exprs.values()):
        filled = expr
        for name, value in VARIABLES.items():
            filled = filled.replace(name, value)
        rules.append({"record": f"dashboard:query_{i}:check", "expr": filled})
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    return subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    queries = dashboards.queries()
    result = _promtool_check(queries, tmp_path)
    assert result.returncode == 0, f"{sorted(queries)}\n{result.stdout}{result.stderr}"
    assert f"{len(queries)} rules found" in result.stdout, result.stdout


def test_the_check_fails_on_a_bad_query(tmp_path: Path) -> None:
    result = _promtool_check(
        {"broken": 'sum by (model (rate(serving_requests_total{model=~"$model"}[5m]))'}, tmp_path
    )
    assert result.returncode != 0, "promtool accepted an unbalanced query: the check proves nothing"


@pytest.mark.parametrize("key", ["model-api", "experiments"])
def test_serving_dashboards_read_recorded_series_or_contract_metrics(key: str) -> None:
    records = {r["record"] for g in load_rules()["groups"] for r in g["rules"] if "record" in r}
    names = {
        name
        for expr in (q for k, q in dashboards.queries().items() if k.startswith(f"{key}/"))
        for name in re.findall(r"[a-z_:]+:[a-z0-9_:]+", expr)
    }
    assert names, f"{key} uses no recorded series"
    assert names <= records, f"{key} uses unrecorded series {names - records}"


EXPERIMENT_PANELS = ("Traffic share per version", "Randomised traffic share per version",
                     "Error ratio per version", "Conversion ratio (1h)")  # fmt: skip


def test_experiments_show_traffic_share_and_the_analysis_series() -> None:
    titles = {k.split("/", 1)[1] for k in dashboards.queries() if k.startswith("experiments/")}
    for wanted in EXPERIMENT_PANELS:
        assert wanted in titles, f"experiments dashboard lacks {wanted!r}: {titles}"


def test_platform_covers_nodes_pods_gateway_and_rate_limits() -> None:
    exprs = " ".join(q for k, q in dashboards.queries().items() if k.startswith("platform/"))
    for series in (
        "kube_node_status_condition",
        "kube_pod_status_ready",
        "istio_requests_total",
        'response_code="429"',
    ):
        assert series in exprs, f"platform dashboard lacks {series}"


def test_config_maps_labelled_for_grafana_with_valid_json() -> None:
    maps = dashboards.config_maps()
    assert len(maps) == 3, [m["metadata"]["name"] for m in maps]
    uids = set()
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1", "Grafana's sidecar will not find it"
        (body,) = cm["data"].values()
        uids.add(json.loads(body)["uid"])
    assert len(uids) == 3, f"dashboard uids collide: {uids}"
