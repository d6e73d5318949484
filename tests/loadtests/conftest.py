"""Fixtures for the load tests: the bundled models served by the real server, and a short profile."""

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from loadtests.auth import AUTH_HEADER
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
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served server's log folder; `access.log` has a JSON line per inference request."""
    return tmp_path_factory.mktemp("server")


@pytest.fixture(scope="session")
def served(server_logs: Path) -> Iterator[tuple[str, str]]:
    """(REST base URL, gRPC host:port) of the serving image on the bundled models.

    Its access log records each request's `authorization` header as the caller, so a test sees what the
    load test's users sent, over either protocol (the server's own audit field, no stand-in endpoint).
    """
    with ExitStack() as stack:
        with pytest.MonkeyPatch.context() as env:
            # Only while the process starts: the rest of the session keeps its own environment.
            env.setenv("SERVING_TRUSTED_PROXY_HEADER", AUTH_HEADER)
            http, grpc = stack.enter_context(running_server(BUNDLED_MODELS, server_logs))
        yield f"http://{http}", grpc


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """The quick profile and the SLO files written to disk."""
    written = {}
    for name, text in {"profiles": QUICK_PROFILES, "lax": LAX_SLO, "impossible": IMPOSSIBLE_SLO}.items():
        written[name] = tmp_path / f"{name}.yaml"
        written[name].write_text(text)
    return written
