"""Fixtures for the load tests: the bundled models served by the real server, and a short profile."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from servectl.demo import BUNDLED_MODELS, running_server

QUICK_PROFILES = """
quick:
  description: a few seconds at three users, for tests
  shape: {kind: constant, users: 3, duration_s: 4}
  traffic:
    protocols: {rest: 2, grpc: 1}
    models: {tabular-classifier: 3, tabular-classifier-int8: 1}
    user_ids: 200
    enterprise_share: 0.05
    think_ms: [5, 10]
"""

LAX_SLO = """
overall: {p95_ms: 5000, error_rate: 0.05, min_requests: 10}
models:
  tabular-classifier:
    p99_ms: 5000
    variants:
      "1": {min_share: 0.5}
      "2": {max_share: 0.5}
  tabular-classifier-int8: {error_rate: 0.05}
"""

IMPOSSIBLE_SLO = """
overall: {min_requests: 1000000000, min_rps: 1000000}
"""


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(REST base URL, gRPC host:port) of the serving image on the bundled models."""
    logs = tmp_path_factory.mktemp("server")
    with running_server(BUNDLED_MODELS, logs) as (http, grpc):
        yield f"http://{http}", grpc


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """The quick profile and the SLO files written to disk."""
    written = {}
    for name, text in {"profiles": QUICK_PROFILES, "lax": LAX_SLO, "impossible": IMPOSSIBLE_SLO}.items():
        written[name] = tmp_path / f"{name}.yaml"
        written[name].write_text(text)
    return written
