"""Helpers of the asynchronous inference tests: servers wired to the test redis, submits, and polls."""

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import requests

from serving_image.job_queue import JobQueue
from serving_image.settings import Settings
from tests.serving_image.conftest import ServerProcess, logged_events, start_server
from tests.serving_image.redis_fixture import RedisServer

FEATURES = 30
TABULAR = "tabular-classifier"


def rows(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, FEATURES)).astype(np.float32)


def infer_body(data: np.ndarray, name: str = "features", **extra: Any) -> dict[str, Any]:
    """A V2 JSON request of one FP32 input; ``extra`` adds top-level members (id, parameters, outputs)."""
    tensor = {"name": name, "shape": list(data.shape), "datatype": "FP32", "data": data.ravel().tolist()}
    return {"inputs": [tensor], **extra}


def async_body(data: np.ndarray, **extra: Any) -> dict[str, Any]:
    return infer_body(data, parameters={"async": True}, **extra)


def async_env(redis_server: RedisServer, stream: str, **settings: object) -> dict[str, str]:
    """The ``SERVING_ASYNC_*`` variables of a server on the test redis and ``stream``."""
    env = {"SERVING_ASYNC_REDIS_URL": redis_server.url, "SERVING_ASYNC_STREAM": stream}
    env |= {f"SERVING_{name.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
            for name, value in settings.items()}  # fmt: skip
    return env


def start_async_server(
    repository: Path, log_dir: Path, redis_server: RedisServer, stream: str, **settings: object
) -> ServerProcess:
    return start_server(repository, log_dir, env=async_env(redis_server, stream, **settings))


def infer_url(server: ServerProcess, model: str, version: str | None = None) -> str:
    versioned = f"/versions/{version}" if version else ""
    return f"{server.base}/v2/models/{model}{versioned}/infer"


def submit(
    server: ServerProcess, model: str, body: dict[str, Any], version: str | None = None,
    headers: dict[str, str] | None = None,
) -> requests.Response:  # fmt: skip
    return requests.post(infer_url(server, model, version), json=body, headers=headers or {}, timeout=10)


def submitted(response: requests.Response) -> str:
    """The job id of a 202, after checking the answer's form."""
    assert response.status_code == 202, f"{response.status_code}: {response.text}"
    document = response.json()
    assert set(document) == {"id", "status"} and document["status"] == "pending", document
    model = response.request.path_url.split("/")[3]  # /v2/models/{model}/...
    assert response.headers["location"] == f"/v2/models/{model}/jobs/{document['id']}", response.headers
    job_id: str = document["id"]
    return job_id


def job(server: ServerProcess, job_id: str, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.get(f"{server.base}/v2/jobs/{job_id}", headers=headers or {}, timeout=10)


def finished(
    server: ServerProcess, job_id: str, headers: dict[str, str] | None = None, timeout: float = 30
) -> dict[str, Any]:
    """The job's document once it is done or failed (polled; never a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = job(server, job_id, headers)
        assert answer.status_code == 200, f"{answer.status_code}: {answer.text}"
        document: dict[str, Any] = answer.json()
        if document["status"] in ("done", "failed"):
            return document
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not finished in {timeout} s: {document}")
        time.sleep(0.02)


def access_events(server: ServerProcess, event: str) -> list[dict[str, Any]]:
    """The access-log lines (stdout) of one event: ``request``, ``job_submitted``, ``job_retry``, ..."""
    return logged_events(server.stdout(), event)


def stored_result(client: Any, job_id: str) -> dict[str, Any]:
    """The V2 response stored in the job's hash, parsed."""
    raw = client.hget(f"job:{job_id}", "result")
    assert raw is not None, f"job {job_id} has no stored result"
    result: dict[str, Any] = json.loads(raw)
    return result


@asynccontextmanager
async def opened(url: str, stream: str, **settings: Any) -> AsyncIterator[JobQueue]:
    """A job queue on the test redis and ``stream``, its consumer group made; closed on exit."""
    queue = JobQueue.connect(Settings(async_redis_url=url, async_stream=stream, **settings))
    try:
        await queue.ensure_group()
        yield queue
    finally:
        await queue.close()
