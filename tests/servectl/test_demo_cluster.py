"""make demo's real-engine phase, run for real: a control plane comes up, onprem-ae's platform layer is
deployed with the real engine, its routes and objects are read back, it is destroyed and the control plane
is stopped, leaving no process behind."""

from pathlib import Path

import pytest

from servectl.cluster.state import Layout, read_state
from servectl.demo import Phase, cluster_markdown
from servectl.demo_cluster import cluster_phase

pytestmark = pytest.mark.slow


def test_the_phase_deploys_reads_the_routes_and_destroys(tmp_path: Path) -> None:
    phases: list[Phase] = []
    result = cluster_phase(tmp_path, phases)
    assert result.get("passed") is True and [p.result for p in phases] == ["PASS"], result
    assert result["routes"] == {"banking/tabular-classifier": {"v1": 90, "v2": 10}}, (
        "the stack file's weights"
    )
    objects = result["objects"]
    assert (
        objects["Deployment"] >= 4 and objects["AuthorizationPolicy"] >= 5 and objects["PrometheusRule"] == 2
    )
    assert result["left"] == [] and result["destroy_code"] == 0
    assert read_state(Layout(tmp_path / "cluster")) is None, "the control plane is stopped and its state gone"
    section = "\n".join(cluster_markdown(result))
    assert "| banking/tabular-classifier | v1 90%, v2 10% |" in section, section
