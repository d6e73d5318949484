"""The drift loop's traffic: rows from the drift sampler (`loadtests.drift`), unshifted or shifted, sent
from a few threads at a paced rate, with feedback from the synthetic ground truth once asked for.

Feedback is the row's true class as a `label` (drawn from the ground truth's probability for the
population sent): the server compares it with the class it answered, and the experiment's accuracy check
compares the versions on live traffic. Bounded in time and in count, always; every thread stops at the
deadline or on `stop()`.
"""

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from loadtests.drift import Sampler
from servectl.drift.synthetic import class_one_probability


@dataclass
class TrafficCounts:
    """What the traffic saw."""

    versions: Counter[str] = field(default_factory=Counter)
    """Responses per serving version (`x-model-version`)."""
    statuses: Counter[int] = field(default_factory=Counter)
    feedback: Counter[int] = field(default_factory=Counter)
    """Feedback responses per HTTP status."""
    correct: Counter[str] = field(default_factory=Counter)
    """Per version, answers that matched the true class (while feedback was on)."""
    judged: Counter[str] = field(default_factory=Counter)
    """Per version, answers compared with the true class (while feedback was on)."""
    first_seen: dict[str, float] = field(default_factory=dict)
    """Per version, the wall time of its first answer."""


class DriftTraffic:
    """Paced inference requests for one model from `threads` threads, until `stop()` or `max_seconds`."""

    def __init__(
        self,
        url: str,
        model: str,
        sampler: Sampler,
        shift: Mapping[str, float],
        *,
        rate: float = 150.0,
        threads: int = 4,
        max_seconds: float = 300.0,
        seed: int = 0,
    ) -> None:
        self.url, self.model, self.sampler, self.seed = url, model, sampler, seed
        index = {f.name: f.index for f in sampler.features}
        self.shift_by_name = dict(shift)
        self.shift_by_index = {index[name]: amount for name, amount in shift.items()}
        self.interval = threads / rate
        self.deadline = time.monotonic() + max_seconds
        self.max_requests = int(rate * max_seconds / threads) + 1
        self.counts = TrafficCounts()
        self.failure: str | None = None
        """Why a thread stopped early, if one did (the loop checks it while it waits)."""
        self.shifted = threading.Event()
        self.feedback_on = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> "DriftTraffic":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every thread and wait for it (each request has a 10 s timeout)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def shift(self) -> float:
        """Send shifted rows from now on; the wall time it took effect."""
        self.shifted.set()
        return time.time()

    def _run(self, number: int) -> None:
        host, _, port = self.url.removeprefix("http://").partition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        rng = np.random.default_rng(self.seed * 1000 + number)
        next_send = time.monotonic()
        try:
            for _ in range(self.max_requests):
                if self._stop.is_set() or time.monotonic() > self.deadline:
                    return
                # Pacing, not synchronisation: the rate stays near `rate` whatever the server's speed.
                self._stop.wait(max(0.0, next_send - time.monotonic()))
                next_send += self.interval
                self._one(conn, rng)
        except Exception as error:  # any failure is reported to the loop, which stops with it
            if not self._stop.is_set():
                self.failure = f"traffic thread {number} stopped: {type(error).__name__}: {error}"
        finally:
            conn.close()

    def _one(self, conn: http.client.HTTPConnection, rng: np.random.Generator) -> None:
        shifted = self.shifted.is_set()
        row = self.sampler.rows(1, rng, self.shift_by_name if shifted else None)
        body = {"inputs": [{"name": self.sampler.input, "shape": list(row.shape), "datatype": "FP32",
                            "data": row.ravel().tolist()}]}  # fmt: skip
        conn.request(
            "POST", f"/v2/models/{self.model}/infer", json.dumps(body), {"content-type": "application/json"}
        )
        response = conn.getresponse()
        document = json.loads(response.read() or b"{}")
        version = response.getheader("x-model-version") or "?"
        with self._lock:
            self.counts.statuses[response.status] += 1
            self.counts.versions[version] += 1
            self.counts.first_seen.setdefault(version, time.time())
        if response.status != 200 or not self.feedback_on.is_set():
            return
        truth = bool(rng.random() < class_one_probability(row, self.shift_by_index if shifted else None)[0])
        label = next(o["data"][0] for o in document["outputs"] if o["name"] == "label")
        feedback = {"request_id": response.getheader("x-request-id") or "", "label": int(truth)}
        conn.request("POST", f"/v2/models/{self.model}/feedback", json.dumps(feedback),
                     {"content-type": "application/json"})  # fmt: skip
        reply = conn.getresponse()
        reply.read()
        with self._lock:
            self.counts.feedback[reply.status] += 1
            self.counts.judged[version] += 1
            self.counts.correct[version] += int(bool(label) == truth)
