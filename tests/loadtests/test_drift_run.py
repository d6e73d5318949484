"""A short real locust run of a drift profile against a real server (drift sampling at rate 1) moves that
server's drift counters as the profile says: the shifted feature's upper bins fill, the others keep their
training shares. What the sampler tests cannot show: the profile reaches locust through its files and
options, the users send the sampled rows, and the server bins them as the profile's shares expect."""

import math
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from loadtests.run import LoadTest, run
from servectl.demo import server_process
from servectl.drift.synthetic import MODEL, build_repository

pytestmark = pytest.mark.slow

SHIFTED = "mean_radius"
PROFILES = f"""
drift-test:
  description: 6 s on the training profile, then {SHIFTED} 3 sd higher for 6 s
  shape: {{kind: constant, users: 4, duration_s: 12}}
  traffic:
    protocols: {{rest: 1}}
    models: {{{MODEL}: 1}}
    think_ms: [5, 10]
  drift: {{features: [{SHIFTED}], shift_sd: 3, start_s: 6, duration_s: 6}}
"""
SLO = "overall: {error_rate: 0.01, min_requests: 100}\n"


def drift_counts(base: str) -> dict[str, dict[str, float]]:
    """Per feature, the server's sampled rows per bin (version 1)."""
    text = requests.get(f"{base}/metrics", timeout=10).text
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "serving_drift_input_total" and sample.labels["version"] == "1":
                out.setdefault(sample.labels["feature"], {})[sample.labels["bin"]] = sample.value
    return out


def expected_shares(base: str) -> dict[str, dict[str, float]]:
    text = requests.get(f"{base}/metrics", timeout=10).text
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "serving_drift_expected_share" and sample.labels["version"] == "1":
                out.setdefault(sample.labels["feature"], {})[sample.labels["bin"]] = sample.value
    return out


def psi(live: dict[str, float], expected: dict[str, float]) -> float:
    """The recording rule's formula (docs/drift.md)."""
    total = sum(live.values())
    return sum(
        (live.get(b, 0) / total - e) * math.log(max(live.get(b, 0) / total, 1e-4) / max(e, 1e-4))
        for b, e in expected.items()
    )


def test_a_drift_run_moves_the_servers_counters_on_the_shifted_feature_only(tmp_path: Path) -> None:
    repository = build_repository(tmp_path / "models")
    (tmp_path / "profiles.yaml").write_text(PROFILES)
    (tmp_path / "slo.yaml").write_text(SLO)
    env = {"SERVING_DRIFT_SAMPLE_RATE": "1", "SERVING_DRAIN_DELAY_SECONDS": "0"}
    with server_process(repository, tmp_path / "server", env) as served:
        base = f"http://{served.http}"
        test = LoadTest(
            target=base,
            profile="drift-test",
            profile_file=tmp_path / "profiles.yaml",
            slo_file=tmp_path / "slo.yaml",
            out=tmp_path / "out",
            model_repository=repository,
        )
        code = run(test, print)
        counts, expected = drift_counts(base), expected_shares(base)
    assert code == 0, f"the run's gates failed: {(tmp_path / 'out' / 'gates.json').read_text()}"
    rows = sum(counts[SHIFTED].values())
    assert rows >= 200, f"too few rows counted to judge: {rows}"
    scores = {feature: psi(bins, expected[feature]) for feature, bins in counts.items()}
    top = (counts[SHIFTED]["8"] + counts[SHIFTED]["9"]) / rows
    assert top > 0.45, f"{SHIFTED}: half the rows moved 3 sd up, yet the top two deciles hold {top:.2f}"
    assert scores[SHIFTED] > 0.25, f"{SHIFTED}: PSI {scores[SHIFTED]:.3f} is not past the critical threshold"
    calm = {f: round(s, 4) for f, s in scores.items() if f != SHIFTED}
    assert max(calm.values()) < 0.1, f"an unshifted feature looks drifted: {calm}"
