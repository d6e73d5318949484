"""Per-request cost of the drift counters: the REST app driven in process at drift sample rates 0, 0.1 and 1.

Run: ``make drift-bench`` or ``.venv/bin/python benchmarks/drift_overhead.py`` (after ``make setup``, which
builds the bundled models and their profiles). Each request is one call of the ASGI application on the
bundled classifier's version 1, so the figures are the server's own work per request (JSON decoding,
validation, batching, ONNX Runtime, encoding) without a network or HTTP parser; the difference between
rates is what counting adds. A real request also pays for the network, so its relative overhead is lower.
The three rates run on the same server in the same process, interleaved round by round (each round
starting with another rate), and the median of the rounds is kept.
"""

import argparse
import asyncio
import io
import statistics
import time

import numpy as np
import orjson

from benchmarks import asgi
from serving_image.access_log import AccessLog
from serving_image.dataplane import DataPlane
from serving_image.metrics import Metrics
from serving_image.repository import Repository
from serving_image.rest import RestApp
from serving_image.settings import BUNDLED_MODELS, Settings
from serving_image.shadow import ShadowTraffic
from serving_image.tracking import RequestTracker

MODEL = "tabular-classifier"
VERSION = "1"
PATH = f"/v2/models/{MODEL}/versions/{VERSION}/infer"
RATES = (0.0, 0.1, 1.0)
BATCHES = (1, 64)
SEED = 20261130


class InProcessServer:
    """The REST app on the bundled models, called directly as ASGI; its drift sample rate can be changed."""

    def __init__(self, repository: Repository) -> None:
        settings = Settings(access_log=False)
        metrics = Metrics()
        self.dataplane = DataPlane(repository, metrics, drift_sample_rate=0.0)
        self.metrics = metrics
        tracker = RequestTracker(metrics, AccessLog(io.BytesIO(), enabled=False))
        self.app = RestApp(self.dataplane, tracker, ShadowTraffic(self.dataplane), settings)

    async def infer(self, body: bytes) -> int:
        """One POST to the version's infer path; the status."""
        status, _ = await asgi.post(self.app, PATH, body, [(b"content-type", b"application/json")])
        return status

    def counted_rows(self) -> float:
        """Rows the drift counters hold for the benchmarked version."""
        self.dataplane.drift.flush()
        labels = {"model": MODEL, "version": VERSION}
        return self.metrics.registry.get_sample_value("serving_drift_rows_total", labels) or 0.0


def request_body(rows: int) -> bytes:
    """A V2 JSON request of ``rows`` rows drawn around the training data's scale."""
    data = np.random.default_rng(SEED).normal(10, 5, (rows, 30)).astype(np.float32)
    tensor = {"name": "features", "datatype": "FP32", "shape": [rows, 30], "data": data.ravel().tolist()}
    return orjson.dumps({"inputs": [tensor]})


async def _time(server: InProcessServer, body: bytes, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        status = await server.infer(body)
        assert status == 200, status
    return (time.perf_counter() - started) / count


async def run(requests: int, rounds: int) -> dict[tuple[int, float], list[float]]:
    """Seconds per request for every (batch, rate): one list of per-round figures each.

    One server for every rate (only ``sample_rate`` changes between rounds), so the rates share the
    same sessions, batchers and memory, and differ in nothing but the counting.
    """
    server = InProcessServer(Repository.load(BUNDLED_MODELS, 1))
    drift = server.dataplane.drift
    await server.dataplane.start()
    if not drift.monitored(MODEL, VERSION):
        raise SystemExit(f"{MODEL}/{VERSION} is not monitored: rebuild the models (make models)")
    figures: dict[tuple[int, float], list[float]] = {(b, r): [] for b in BATCHES for r in RATES}
    for batch in BATCHES:
        body = request_body(batch)
        await _time(server, body, 500)  # warm-up
        for round_number in range(rounds):
            # Each round starts with another rate, so no rate always runs first (or last) in a round.
            shift = round_number % len(RATES)
            for rate in RATES[shift:] + RATES[:shift]:
                drift.sample_rate = rate
                counted = server.counted_rows()
                figures[(batch, rate)].append(await _time(server, body, requests))
                if (server.counted_rows() == counted) != (rate == 0):
                    raise SystemExit(f"rate {rate}: the counters did not move as they should")
    await server.dataplane.stop()
    return figures


def counting_cost(repository: Repository, batch: int, count: int) -> float:
    """Seconds per sampled ``DriftMonitor.observe`` alone, its share of binning and writing included."""
    metrics = Metrics()
    plane = DataPlane(repository, metrics, drift_sample_rate=1.0)
    plane.drift.register(MODEL, repository.models[MODEL].versions[VERSION])
    feeds = {"features": np.random.default_rng(SEED).normal(10, 5, (batch, 30)).astype(np.float32)}
    started = time.perf_counter()
    for _ in range(count):
        plane.drift.observe(MODEL, VERSION, feeds)
    plane.drift.flush()  # what still waits is binned and written inside the timing
    return (time.perf_counter() - started) / count


def main() -> None:
    """Print µs per request for each batch and rate, and the ratio to rate 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per round (default 300)")
    parser.add_argument(
        "--rounds", type=int, default=31, help="rounds per rate; the median is kept (default 31)"
    )
    args = parser.parse_args()
    figures = asyncio.run(run(args.requests, args.rounds))
    repository = Repository.load(BUNDLED_MODELS, 1)
    print(f"{MODEL} version {VERSION}, REST app in process, median of {args.rounds} rounds x {args.requests}")
    # The estimate: the rate times the cost of one sampled observe() (timed alone, 5000 times), over the
    # request time at rate 0. It does not move with the machine's load the way the difference of two
    # medians does, and the two agree within the noise when the machine is quiet.
    print(
        f"{'batch':>5}  {'rate':>4}  {'µs/request':>10}  {'vs rate 0':>9}  {'estimate':>8}  observe() alone"
    )
    for batch in BATCHES:
        base = statistics.median(figures[(batch, 0.0)])
        alone = counting_cost(repository, batch, 5000)
        for rate in RATES:
            median = statistics.median(figures[(batch, rate)])
            estimate = rate * alone / base
            measured = median / base - 1
            print(f"{batch:>5}  {rate:>4}  {median * 1e6:10.1f}  {measured:+9.1%}  {estimate:+8.1%}  "
                  f"{alone * 1e6:.1f} µs")  # fmt: skip


if __name__ == "__main__":
    main()
