"""The REST transport's async path in-process: a real data plane and job queue, the ASGI app called directly.

What the server tests cannot stage reliably: the version's batcher being full at the moment a
request arrives. A live request is then shed (429) before its body is read; a job is not, since
it waits in the queue and not in the batcher, even when only its body says it is one.
"""

import asyncio
import io
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from serving_image.access_log import AccessLog
from serving_image.dataplane import DataPlane
from serving_image.errors import Overloaded
from serving_image.job_queue import JobQueue
from serving_image.metrics import Metrics
from serving_image.repository import Repository
from serving_image.rest import RestApp
from serving_image.settings import Settings
from serving_image.shadow import ShadowTraffic
from serving_image.tracking import RequestTracker
from tests.serving_image.conftest import doubler_graph, save_model, write_config
from tests.serving_image.redis_fixture import RedisServer

BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
Answer = tuple[int, dict[str, str], dict[str, Any]]


async def call(
    app: RestApp, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Answer:
    """One POST through the ASGI app: status, headers and the JSON body."""
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": orjson.dumps(body), "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "client": ("127.0.0.1", 1),
        "headers": [(name.encode(), value.encode()) for name, value in (headers or {}).items()],
    }  # fmt: skip
    await app(scope, receive, send)
    head = {name.decode(): value.decode() for name, value in sent[0]["headers"]}
    return sent[0]["status"], head, orjson.loads(sent[1]["body"])


def with_app(
    tmp_path: Path,
    redis_server: RedisServer,
    stream: str,
    test: Callable[[RestApp, JobQueue], Awaitable[None]],
) -> None:
    save_model(doubler_graph(), tmp_path / "doubler" / "1" / "model.onnx")
    write_config(tmp_path / "doubler", "max_batch_size: 8\n")
    settings = Settings(model_repository=tmp_path, async_redis_url=redis_server.url, async_stream=stream)

    async def run() -> None:
        dataplane = DataPlane(Repository.load(tmp_path, intra_op_threads=1), Metrics())
        await dataplane.start()
        queue = JobQueue.connect(settings)
        log = AccessLog(io.BytesIO())
        tracker = RequestTracker(dataplane.metrics, log)
        app = RestApp(dataplane, tracker, ShadowTraffic(dataplane), settings, queue, log)
        try:
            await queue.ensure_group()
            await test(app, queue)
        finally:
            await queue.close()
            await dataplane.stop()

    asyncio.run(run())


def test_a_full_batcher_sheds_live_requests_but_queues_jobs(
    tmp_path: Path, redis_server: RedisServer, job_stream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def test(app: RestApp, queue: JobQueue) -> None:
        def full(*_: object) -> None:
            raise Overloaded("model 'doubler/1' queue is full (1 waiting); retry later")

        monkeypatch.setattr(DataPlane, "route", full)
        path = "/v2/models/doubler/infer"
        status, _, document = await call(app, path, BODY)
        assert (status, document["error"]) == (
            429,
            "model 'doubler/1' queue is full (1 waiting); retry later",
        )
        by_body = await call(app, path, {**BODY, "parameters": {"async": True}})
        by_header = await call(app, path, BODY, {"prefer": "respond-async"})
        for status, head, document in (by_body, by_header):
            assert status == 202, f"a job is queued, not shed: {status} {document}"
            assert head["location"] == f"/v2/models/doubler/jobs/{document['id']}", head
        assert await queue.depth() == 2, "both jobs are queued"

    with_app(tmp_path, redis_server, job_stream, test)
