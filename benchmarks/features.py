"""Added latency of entity-keyed requests (issue 17): ``patient_id`` against the same features sent.

Run: ``make features-bench`` or ``.venv/bin/python benchmarks/features.py`` (after ``make setup``). A Feast
repository is built in a temporary directory from the project's definitions (serving_image/feature_repo/)
over the 569 breast-cancer rows as patients 0..568, applied and materialized into Feast's local SQLite
online store; the bundled classifier's version 1 is copied with its ``feature_service`` recorded. The REST
app is then driven in process (benchmarks/asgi.py: no socket, no HTTP parser), so the figures are the
server's own work per request, and the difference between the modes is what the lookup adds:

- ``features``: the 30 features of one patient sent as a JSON tensor (the request as it was before);
- ``entity, cache hit``: ``patient_id`` sent, every row already in the server's cache;
- ``entity, cache miss``: ``patient_id`` sent with the cache off, so every request reads the store.

Each mode runs at concurrency 1 and 8 (that many requests in flight, each sent when the last one
answered), in rounds that rotate which mode goes first; all latencies of a mode are pooled for p50/p99.
"""

import argparse
import asyncio
import importlib.util
import io
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import orjson
import pandas as pd  # type: ignore[import-untyped]
import uvloop
from sklearn.datasets import load_breast_cancer

from benchmarks import asgi
from serving_image.access_log import AccessLog
from serving_image.dataplane import DataPlane
from serving_image.features.cache import FeatureCache
from serving_image.features.definition import service_version
from serving_image.features.online import OnlineFeatures, import_feast
from serving_image.features.schema import (
    FEATURE_NAMES,
    FEATURE_VIEW,
    JOIN_KEY,
    SERVICE_KEY,
    SERVICE_VERSION_KEY,
)
from serving_image.metrics import Metrics
from serving_image.repository import Repository
from serving_image.rest import RestApp
from serving_image.settings import BUNDLED_MODELS, Settings
from serving_image.shadow import ShadowTraffic
from serving_image.tracking import RequestTracker

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFINITIONS = REPO_ROOT / "serving_image" / "feature_repo"
MODEL, VERSION, SERVICE = "tabular-classifier", "1", "tabular_classifier_v1"
PATH = f"/v2/models/{MODEL}/versions/{VERSION}/infer"
HEADERS = [(b"content-type", b"application/json")]
MODES = ("features", "entity, cache hit", "entity, cache miss")
CONCURRENCY = (1, 8)
PATIENTS = 64  # distinct patients the requests cycle through
TARGET_ADDED_P50_MS = 1.0


def build_feature_repo(root: Path) -> tuple[Path, np.ndarray]:
    """The project's definitions over every breast-cancer row, applied and materialized; the features."""
    feast = import_feast()
    shutil.copytree(DEFINITIONS, root, ignore=shutil.ignore_patterns("data", "__pycache__"))
    (root / "data").mkdir()
    features = load_breast_cancer().data.astype(np.float32)
    frame = pd.DataFrame(features, columns=list(FEATURE_NAMES))
    frame[JOIN_KEY] = np.arange(len(features), dtype=np.int64)
    frame["event_timestamp"] = pd.Timestamp(datetime(2026, 1, 1, tzinfo=UTC))
    frame.to_parquet(root / "data" / f"{FEATURE_VIEW}.parquet")
    spec = importlib.util.spec_from_file_location("feature_repo_definitions", root / "definitions.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load the feature definitions {root / 'definitions.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    kinds = (feast.Entity, feast.FeatureView, feast.FeatureService)
    store = feast.FeatureStore(repo_path=str(root))
    store.apply([value for value in vars(module).values() if isinstance(value, kinds)])
    store.materialize(datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC))
    return root, features


def model_repository(root: Path, store: Any) -> Path:
    """The bundled classifier's version 1, its metadata naming the feature service it is served from."""
    target = root / MODEL / VERSION
    shutil.copytree(BUNDLED_MODELS / MODEL / VERSION, target)
    model = onnx.load(str(target / "model.onnx"))
    props = {prop.key: prop.value for prop in model.metadata_props}
    props |= {SERVICE_KEY: SERVICE, SERVICE_VERSION_KEY: service_version(store, SERVICE)}
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(target / "model.onnx"))
    (root / MODEL / "config.yaml").write_text("max_batch_size: 64\nmax_queue_delay_ms: 0\n", encoding="utf-8")
    return root


def bodies(features: np.ndarray) -> dict[str, list[bytes]]:
    """Per mode, one request body per patient: the features, or the patient's id."""
    sent = []
    keyed = []
    for patient in range(PATIENTS):
        row = {"name": "features", "datatype": "FP32", "shape": [1, 30], "data": features[patient].tolist()}
        sent.append(orjson.dumps({"inputs": [row]}))
        ids = {"name": JOIN_KEY, "datatype": "INT64", "shape": [1], "data": [patient]}
        keyed.append(orjson.dumps({"inputs": [ids]}))
    return {"features": sent, "entity, cache hit": keyed, "entity, cache miss": keyed}


async def _client(app: RestApp, requests: list[bytes], latencies: list[float]) -> None:
    for body in requests:
        started = time.perf_counter()
        status, answer = await asgi.post(app, PATH, body, HEADERS)
        latencies.append(time.perf_counter() - started)
        if status != 200:
            raise SystemExit(f"request answered {status}: {answer[:200]!r}")


async def _round(app: RestApp, requests: list[bytes], concurrency: int) -> list[float]:
    """``concurrency`` clients share ``requests``; every latency."""
    latencies: list[float] = []
    shares = [requests[index::concurrency] for index in range(concurrency)]
    await asyncio.gather(*(_client(app, share, latencies) for share in shares))
    return latencies


async def run(workdir: Path, count: int, rounds: int) -> tuple[dict[tuple[str, int], list[float]], float]:
    """Latencies per (mode, concurrency), and Feast's own p50 for one entity (seconds)."""
    repo, features = build_feature_repo(workdir / "feature_repo")
    metrics = Metrics()
    online = OnlineFeatures.open(
        repo, metrics, timeout_ms=1000, cache=FeatureCache(10_000, 3600), refresh_seconds=3600
    )
    models = model_repository(workdir / "models", online.store)
    dataplane = DataPlane(Repository.load(models, 1), metrics, drift_sample_rate=0.0, features=online)
    tracker = RequestTracker(metrics, AccessLog(io.BytesIO(), enabled=False))
    app = RestApp(dataplane, tracker, ShadowTraffic(dataplane), Settings(access_log=False))
    await dataplane.start()
    caches = {"entity, cache hit": online.cache, "entity, cache miss": FeatureCache(0, 0)}
    per_mode = bodies(features)
    figures: dict[tuple[str, int], list[float]] = {(m, c): [] for m in MODES for c in CONCURRENCY}
    for mode in MODES:  # warm-up, which also fills the cache for the hit mode
        online.cache = caches.get(mode, caches["entity, cache hit"])
        await _round(app, per_mode[mode] * 4, 1)
    for round_number in range(rounds):
        shift = round_number % len(MODES)
        for mode in MODES[shift:] + MODES[:shift]:
            online.cache = caches.get(mode, caches["entity, cache hit"])
            requests = (per_mode[mode] * (count // PATIENTS + 1))[:count]
            for concurrency in CONCURRENCY:
                figures[(mode, concurrency)] += await _round(app, requests, concurrency)
    await dataplane.stop()
    return figures, _feast_alone(repo)


def _feast_alone(repo: Path, count: int = 2000) -> float:
    """p50 of Feast's get_online_features for one entity of the service, called directly (seconds)."""
    store = import_feast().FeatureStore(repo_path=str(repo))
    service = store.get_feature_service(SERVICE)
    times = []
    for index in range(count):
        started = time.perf_counter()
        store.get_online_features(features=service, entity_rows=[{JOIN_KEY: index % PATIENTS}]).to_dict()
        times.append(time.perf_counter() - started)
    return statistics.median(times[100:])


def report(figures: dict[tuple[str, int], list[float]], feast_p50: float) -> bool:
    """Print the table and ratios; whether the added p50 is within the target in every cell."""
    met = True
    print(f"{'mode':<20} {'c':>2} {'requests':>8} {'p50 ms':>7} {'p99 ms':>7} {'added p50':>9} "
          f"{'added p99':>9} {'p50 ratio':>9}")  # fmt: skip
    for concurrency in CONCURRENCY:
        base = figures[("features", concurrency)]
        base50, base99 = np.percentile(base, 50), np.percentile(base, 99)
        for mode in MODES:
            values = figures[(mode, concurrency)]
            p50, p99 = np.percentile(values, 50), np.percentile(values, 99)
            added = (p50 - base50) * 1e3
            if mode != "features":
                met = met and bool(added <= TARGET_ADDED_P50_MS)
            print(f"{mode:<20} {concurrency:>2} {len(values):>8} {p50 * 1e3:7.3f} {p99 * 1e3:7.3f} "
                  f"{added:+9.3f} {(p99 - base99) * 1e3:+9.3f} {p50 / base50:9.2f}")  # fmt: skip
    print(f"Feast get_online_features alone, one entity: p50 {feast_p50 * 1e3:.3f} ms")
    verdict = "met" if met else "NOT met"
    print(f"target: at most {TARGET_ADDED_P50_MS} ms added at p50 in every entity-keyed cell: {verdict}")
    return met


def main() -> None:
    """Build the store, run the modes, print the table and whether the target is met."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per mode, concurrency and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each starting with another mode")
    args = parser.parse_args()
    if not 1 <= args.requests <= 100_000 or not 1 <= args.rounds <= 100:
        parser.error("--requests must be 1..100000 and --rounds 1..100")
    with tempfile.TemporaryDirectory(prefix="features-bench-") as workdir:
        figures, feast_p50 = uvloop.run(run(Path(workdir), args.requests, args.rounds))
    print(f"{MODEL} version {VERSION}, REST app in process, {args.rounds} rounds of {args.requests} requests")
    report(figures, feast_p50)


if __name__ == "__main__":
    main()
