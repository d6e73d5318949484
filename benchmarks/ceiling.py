"""The in-process ceiling: ``session.run`` in a loop in this process, no network, no JSON."""

import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.measures import LoadResult, percentile

MAX_CALLS_PER_THREAD = 200_000


def _session(model_path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # One intra-op thread per session: with one loop per core this is the most the cores can do,
    # and it is what a server with one ORT thread per worker process can at best approach.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def _call_loop(
    session: ort.InferenceSession, feeds: dict[str, np.ndarray], deadline: float, latencies_ms: list[float]
) -> None:
    run = session.run
    for _ in range(MAX_CALLS_PER_THREAD):
        start = time.perf_counter()
        run(None, feeds)
        end = time.perf_counter()
        latencies_ms.append((end - start) * 1e3)
        if end >= deadline:
            return


def measure_ceiling(model_path: Path, row: np.ndarray, threads: int, duration_s: float) -> LoadResult:
    """Calls per second and per-call p50/p99 of ``threads`` loops sharing one session, each bounded.

    ORT releases the GIL inside ``run``, so two threads can keep two cores busy.
    """
    session = _session(model_path)
    feeds = {session.get_inputs()[0].name: row}
    for _ in range(50):
        session.run(None, feeds)
    per_thread: list[list[float]] = [[] for _ in range(threads)]
    started = time.perf_counter()
    deadline = started + duration_s
    workers = [
        threading.Thread(target=_call_loop, args=(session, feeds, deadline, latencies), daemon=True)
        for latencies in per_thread
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    latencies = sorted(value for thread_values in per_thread for value in thread_values)
    return LoadResult(
        requests_per_s=len(latencies) / elapsed,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        requests=len(latencies),
    )
