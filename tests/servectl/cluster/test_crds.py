"""Reading a CRD file: a broken or empty one is refused naming the file; establishment is read from the
status conditions. Applying them to a real API server is tested by the control plane's tests."""

from pathlib import Path

import pytest

from servectl.cluster.controlplane import ISTIO_CRDS
from servectl.cluster.crds import CrdError, established, load


def test_the_istio_file_holds_its_crds() -> None:
    assert ISTIO_CRDS.is_file(), f"{ISTIO_CRDS} is missing: run `make kube-apiserver`"
    names = {crd["metadata"]["name"] for crd in load(ISTIO_CRDS)}
    assert "virtualservices.networking.istio.io" in names, sorted(names)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("kind: [unclosed", "cannot be read as YAML"),
        ("kind: ConfigMap\n", "holds no CustomResourceDefinition"),
    ],
)
def test_a_file_without_crds_is_refused(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "crds.yaml"
    path.write_text(text)
    with pytest.raises(CrdError, match=reason) as caught:
        load(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([{"type": "NamesAccepted", "status": "True"}, {"type": "Established", "status": "True"}], True),
        ([{"type": "Established", "status": "False"}], False),
        ([], False),
    ],
)
def test_established_reads_the_condition(conditions: list[dict[str, str]], expected: bool) -> None:
    assert established({"status": {"conditions": conditions}}) is expected
    assert established({}) is False
