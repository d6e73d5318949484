"""The demo's experiment phase: a real Prometheus scrapes the running server; the experiment's first analysis
records its start, bounded load with feedback follows, then one analysis judges the configured split;
returns the decision summary for the demo's report."""

import random
import time
import urllib.parse
from pathlib import Path
from typing import Any

from servectl.experiments import run
from servectl.experiments.decision import Schedule, Thresholds
from servectl.experiments.load import send_load
from servectl.experiments.local_prometheus import local_prometheus


def _converts(version: str, rng: random.Random) -> bool:
    # A synthetic business outcome, the same for both versions: 30% of answered requests convert.
    return rng.random() < 0.3


def demo_phase(
    server_url: str,
    weights: dict[str, int],
    *,
    model: str = "tabular-classifier",
    out_dir: Path,
    requests: int = 1500,
    max_seconds: float = 20.0,
) -> dict[str, Any]:
    """Analyse the experiment the running server is configured for; nothing is changed on the server.

    `weights` are the model's configured weights (its config.yaml). Writes the experiment log and the
    Prometheus log into `out_dir` and returns the decision, reasons, statistics, counts and the load seen.
    """
    host = urllib.parse.urlsplit(server_url).netloc
    out_dir.mkdir(parents=True, exist_ok=True)
    with local_prometheus([host], log=out_dir / "prometheus.log") as prom:
        started = time.monotonic()
        # The experiment starts after a scrape of the counters as they stand (its first analysis records
        # the start and holds), so traffic the server took before this phase (other tests, header routes,
        # explicit versions) is not judged.
        prom.wait_for_scrape()
        experiment = run.Experiment(
            prometheus=prom.url,
            model=model,
            log_path=out_dir / "experiment.jsonl",
            schedule=Schedule(min_samples=100),
            thresholds=Thresholds(
                error_margin=0.02, latency_tolerance=0.1, optional_metrics=frozenset({"value", "accuracy"})
            ),
        )
        run.analyze(experiment, weights)
        load = send_load(
            server_url, model, requests=requests, max_seconds=max_seconds, seed=7, convert=_converts
        )
        prom.wait_for_scrape()
        entry = run.analyze(experiment, weights)
    return {
        "decision": entry["decision"],
        "reasons": entry["reasons"],
        "weights": entry["weights"],
        "next_weights": entry["next_weights"],
        "statistics": entry["statistics"],
        "counts": entry["counts"],
        "load": {
            "requests_by_version": dict(load.versions),
            "statuses": {str(k): v for k, v in load.statuses.items()},
            "feedback_statuses": {str(k): v for k, v in load.feedback.items()},
            "seconds": round(load.seconds, 2),
        },
        "report": run.report(entry),
        "seconds": round(time.monotonic() - started, 2),
    }
