"""The no-nodes mode's charts: one per locked chart, named and versioned as the pinned one, holding only the
CRDs the real chart registers (from the charts' source modules `make setup` fetched), and an error naming
`make setup` when a source is missing. The transform itself is exercised by the real-engine deploy test."""

from pathlib import Path

import pytest
import yaml

from servectl.deploy.no_nodes import CHART_CRDS, ISTIO_CRDS, NoNodesError, _local_chart, build_charts
from stacks.artifacts import load_lock


def crd_names(chart: Path) -> set[str]:
    names = set()
    for path in [*(chart / "crds").glob("*.yaml"), *(chart / "templates").glob("*.yaml")]:
        for doc in yaml.load_all(path.read_text(), Loader=yaml.BaseLoader):  # "=" enums: plain strings
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                names.add(doc["metadata"]["name"])
    return names


@pytest.fixture(scope="module")
def charts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_charts(tmp_path_factory.mktemp("charts"))


def test_every_locked_chart_has_a_stand_in_with_its_name_and_version(charts: dict[str, Path]) -> None:
    locked = {c.name: c.version for c in load_lock().charts.values()}
    assert set(charts) == set(locked) and len(locked) >= 8, sorted(charts)
    versions = {
        name: yaml.safe_load((path / "Chart.yaml").read_text())["version"] for name, path in charts.items()
    }
    assert versions == locked


def test_the_stand_ins_carry_the_real_charts_crds(charts: dict[str, Path]) -> None:
    assert {"prometheusrules.monitoring.coreos.com", "servicemonitors.monitoring.coreos.com"} <= crd_names(
        charts["kube-prometheus-stack"]
    )
    assert {"virtualservices.networking.istio.io", "authorizationpolicies.security.istio.io"} <= crd_names(
        charts["base"]
    )
    # cert-manager's are templates (gated on crds.enabled): present as files with the chart's helpers.
    templates = {p.name for p in (charts["cert-manager"] / "templates").iterdir()}
    assert {"crd-certificates.yaml", "crd-clusterissuers.yaml", "_helpers.tpl"} <= templates, templates
    assert crd_names(charts["istiod"]) == set() and crd_names(charts["metrics-server"]) == set()


def test_a_missing_crd_source_names_make_setup(tmp_path: Path) -> None:
    with pytest.raises(NoNodesError, match=r"chart base: CRD source .*missing; run `make setup`"):
        build_charts(tmp_path / "out", CHART_CRDS, tmp_path / "no-istio.yaml")
    with pytest.raises(NoNodesError, match=r"chart kube-prometheus-stack: .*make setup"):
        build_charts(tmp_path / "out2", tmp_path / "empty", ISTIO_CRDS)


def test_an_oci_reference_maps_to_its_stand_in_or_is_refused(charts: dict[str, Path]) -> None:
    assert _local_chart(charts, "oci://registry.example/mirror/charts/istiod") == str(charts["istiod"])
    with pytest.raises(NoNodesError, match="not in the artifacts lock"):
        _local_chart(charts, "oci://registry.example/mirror/charts/unknown")
