"""Bounded load for experiments: V2 inference requests from a few threads, and feedback for some of them.

Bounded in count and in time, always: a test or the demo can never leave a loop running.
"""

import http.client
import json
import random
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

FEATURES = 30
ConvertFn = Callable[[str, random.Random], bool | None]
"""Given the serving version, whether the request converted (None: send no feedback)."""
LabelFn = Callable[[str, int, random.Random], int | None]
"""Given the serving version and the class it predicted, the true class to report (None: no label)."""


@dataclass
class LoadResult:
    """What the load saw."""

    versions: Counter[str] = field(default_factory=Counter)
    """Responses per serving version (from `x-model-version`)."""
    statuses: Counter[int] = field(default_factory=Counter)
    """Responses per HTTP status."""
    feedback: Counter[int] = field(default_factory=Counter)
    """Feedback responses per HTTP status."""
    seconds: float = 0.0
    """Wall time."""


def _body(rng: random.Random) -> bytes:
    data = [round(rng.uniform(-1.0, 1.0), 4) for _ in range(FEATURES)]
    inputs = [{"name": "features", "shape": [1, FEATURES], "datatype": "FP32", "data": data}]
    return json.dumps({"inputs": inputs}).encode()


_LOCK = threading.Lock()


def _feedback(version: str, body: bytes, rng: random.Random, convert: ConvertFn | None,
              label: LabelFn | None) -> dict[str, object] | None:  # fmt: skip
    """The feedback to post on an answered request: a label (from the predicted class), or conversion."""
    if label is not None:
        outputs = {o["name"]: o["data"] for o in json.loads(body)["outputs"]}
        true = label(version, int(outputs["label"][0]), rng)
        return None if true is None else {"label": true}
    outcome = convert(version, rng) if convert else None
    return None if outcome is None else {"converted": outcome}


def _worker(
    url: str,
    model: str,
    quota: int,
    deadline: float,
    seed: int,
    feedback_fns: tuple[ConvertFn | None, LabelFn | None],
    out: LoadResult,
) -> None:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    rng = random.Random(seed)
    try:
        for _ in range(quota):
            if time.monotonic() > deadline:
                return
            headers = {"content-type": "application/json"}
            conn.request("POST", f"/v2/models/{model}/infer", _body(rng), headers)
            response = conn.getresponse()
            body = response.read()
            # Feedback names the id the server gave the request: it keeps only its own ids.
            request_id = response.getheader("x-request-id") or ""
            version = response.getheader("x-model-version") or "?"
            with _LOCK:
                out.statuses[response.status] += 1
                out.versions[version] += 1
            said = _feedback(version, body, rng, *feedback_fns) if response.status == 200 else None
            if said is not None:
                feedback = {"request_id": request_id, **said}
                conn.request("POST", f"/v2/models/{model}/feedback", json.dumps(feedback).encode(),
                             {"content-type": "application/json"})  # fmt: skip
                reply = conn.getresponse()
                reply.read()
                with _LOCK:
                    out.feedback[reply.status] += 1
    finally:
        conn.close()


def send_load(
    url: str,
    model: str,
    *,
    requests: int,
    max_seconds: float,
    threads: int = 4,
    seed: int = 0,
    convert: ConvertFn | None = None,
    label: LabelFn | None = None,
) -> LoadResult:
    """Send at most `requests` inference requests within at most `max_seconds`, from `threads` threads;
    each answered one gets label feedback if `label` is given, else conversion feedback if `convert` is."""
    result = LoadResult()
    started = time.monotonic()
    deadline = started + max_seconds
    quotas = [requests // threads + (1 if i < requests % threads else 0) for i in range(threads)]
    workers = [
        threading.Thread(
            target=_worker, args=(url, model, q, deadline, seed * 1000 + i, (convert, label), result)
        )
        for i, q in enumerate(quotas)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=max_seconds + 30)
    result.seconds = time.monotonic() - started
    return result
