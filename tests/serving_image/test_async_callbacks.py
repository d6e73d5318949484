"""Completion callbacks of jobs, end to end: server processes, a real redis-server, a real receiver.

A job names its callback with the request parameter ``callback_url`` or the header
``X-Callback-Url``; the URL is checked at submit (400 naming the problem, 501 when the server has no
callbacks), and once the job's result or dead letter is stored the worker POSTs the job's final
document, signed, retried per the settings; ``GET /v2/jobs/{id}`` and the ``job_callback`` log line
say how it went. A callback still going at SIGTERM is left for another worker, which delivers it; a
worker SIGKILLed while sending callbacks loses none: another worker delivers every one.
"""

import json
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from serving_image.job_callback_dispatch import LEFT_REASON, MAX_CALLBACK_CONNECTIONS
from serving_image.job_callbacks import verify_signature
from tests.serving_image.async_jobs import access_events, finished, job, start_async_server, submit, submitted
from tests.serving_image.callback_receiver import Answer, Received, ReceiverThread, independent_signature
from tests.serving_image.conftest import (
    ServerProcess,
    capped_doubler_graph,
    logged_events,
    save_model,
    start_server,
    wait_until,
    write_config,
)
from tests.serving_image.redis_fixture import RedisServer

KEY = b"callback-signing-key-" + b"0123456789" * 4
CALLER = {"x-caller": "alice"}
CAPPED_ROWS = 10  # ONNX Runtime fails a run of the capped model on 10 rows or more
PATHS = {
    "/flaky": [Answer(503), Answer(204)],
    "/down": [Answer(500)],
    "/hang": [Answer(hang=True)],
}


@dataclass
class Setup:
    server: ServerProcess
    receiver: ReceiverThread
    stream: str
    redis: RedisServer

    def hook(self, path: str) -> str:
        return f"{self.receiver.origin}{path}"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, test_repository: Path) -> Path:
    """The doubler, and a model whose runs fail in ONNX Runtime on ``CAPPED_ROWS`` rows or more."""
    root = tmp_path_factory.mktemp("callback-repository")
    shutil.copytree(test_repository / "doubler", root / "doubler")
    save_model(capped_doubler_graph(CAPPED_ROWS), root / "capped" / "1" / "model.onnx")
    write_config(root / "capped", "max_batch_size: 64\nmax_queue_delay_ms: 0\n")
    return root


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("callback-key") / "hmac.key"
    path.write_bytes(KEY + b"\n")
    return path


def callback_settings(receiver: ReceiverThread, key_file: Path, **extra: object) -> dict[str, object]:
    return {
        "async_callback_hosts": receiver.origin, "async_callback_secret_file": key_file,
        "async_callback_max_attempts": 3, "async_callback_backoff_s": 0.01,
        "async_callback_backoff_cap_s": 0.05, "trusted_proxy_header": "x-caller", **extra,
    }  # fmt: skip


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, repository: Path, key_file: Path, redis_server: RedisServer
) -> Iterator[Setup]:
    """A server that takes and runs jobs (one attempt each), with callbacks allowed to the receiver."""
    stream = f"callbacks-{time.monotonic_ns()}"
    with ReceiverThread(paths=PATHS) as receiver:
        process = start_async_server(
            repository, tmp_path_factory.mktemp("callback-server"), redis_server, stream, async_worker=True,
            async_max_attempts=1, **callback_settings(receiver, key_file),
        )  # fmt: skip
        yield Setup(process, receiver, stream, redis_server)
        assert process.stop() == 0, f"the server did not drain cleanly: {process.stderr()}"


def doubler(rows: int = 1, **parameters: object) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [{"name": "x", "shape": [rows, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0] * rows}]
    }
    return body | ({"parameters": parameters} if parameters else {})


def with_callback(hook: object, rows: int = 1) -> dict[str, Any]:
    """An async request for the doubler (or the capped model) naming ``hook`` in its parameters."""
    return doubler(rows, **{"async": True, "callback_url": hook})


def callback_line(server: ServerProcess, job_id: str, timeout: float = 30) -> dict[str, Any]:
    """The job's ``job_callback`` line, once its callback has ended (logged before it is recorded)."""
    found: list[dict[str, Any]] = []

    def ended() -> bool:
        found[:] = [line for line in access_events(server, "job_callback") if line["job_id"] == job_id]
        return bool(found)

    wait_until(ended, timeout, f"no job_callback line for {job_id}")
    assert len(found) == 1, f"one callback per job: {found}"
    return found[0]


def recorded_callback(server: ServerProcess, job_id: str) -> dict[str, Any]:
    """The job's ``callback`` in ``GET /v2/jobs/{id}`` once its outcome is recorded."""
    document: dict[str, Any] = {}

    def recorded() -> bool:
        document.update(job(server, job_id, CALLER).json())
        return document["callback"]["status"] not in ("pending", "sending")

    wait_until(recorded, 30, lambda: f"the callback's outcome was not recorded: {document}")
    callback: dict[str, Any] = document["callback"]
    return callback


def verified(request: Received) -> dict[str, Any]:
    """The callback's document, after checking its signature by the documented recipe."""
    timestamp, signature = request.headers["x-signature-timestamp"], request.headers["x-signature"]
    assert signature == independent_signature(KEY, timestamp, request.body), "the signature must verify"
    assert abs(time.time() - int(timestamp)) < 60, f"a fresh timestamp: {timestamp}"
    assert request.headers["content-type"] == "application/json", request.headers
    document: dict[str, Any] = json.loads(request.body)
    return document


def job_keys(redis_server: RedisServer) -> int:
    return sum(1 for _ in redis_server.client().scan_iter("job:*"))


def test_a_jobs_callback_arrives_once_signed_with_the_final_document(setup: Setup) -> None:
    hook = setup.hook("/hooks/done?tenant=a")
    job_id = submitted(submit(setup.server, "doubler", with_callback(hook), headers=CALLER))
    line = callback_line(setup.server, job_id)
    [request] = setup.receiver.to("/hooks/done")
    assert request.target == "/hooks/done?tenant=a", request.target
    document = finished(setup.server, job_id, CALLER)
    assert verified(request) == {
        "id": job_id, "status": "done", "model": "doubler", "version": "1", "response": document["response"],
    }, "the callback carries the final document, its response as GET reports it"  # fmt: skip
    assert document["response"]["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0], document
    assert (line["delivered"], line["attempts"], line["status"], line["reason"]) == (True, 1, 204, "HTTP 204")
    assert recorded_callback(setup.server, job_id) == {
        "url": hook, "status": "delivered", "attempts": 1, "detail": "delivered on attempt 1 (HTTP 204)",
    }  # fmt: skip
    assert len(setup.receiver.to("/hooks/done")) == 1, "the callback was sent once"
    [submitted_line] = [e for e in access_events(setup.server, "job_submitted") if e["job_id"] == job_id]
    assert submitted_line["callback"] is True, submitted_line


def test_the_header_names_a_callback_too_and_the_same_url_twice_is_one(setup: Setup) -> None:
    hook = setup.hook("/hooks/header")
    headers = {"prefer": "respond-async", "x-callback-url": hook, **CALLER}
    job_id = submitted(submit(setup.server, "doubler", doubler(), headers=headers))
    both = submitted(submit(setup.server, "doubler", doubler(callback_url=hook), headers=headers))
    for each in (job_id, both):
        assert callback_line(setup.server, each)["delivered"], each
    documents = sorted(verified(request)["id"] for request in setup.receiver.to("/hooks/header"))
    assert documents == sorted([job_id, both]), "one callback per job, whichever way it was named"


def test_a_dead_lettered_jobs_callback_says_failed_with_the_reason(setup: Setup) -> None:
    hook = setup.hook("/hooks/failed")
    body = with_callback(hook, CAPPED_ROWS + 2)
    job_id = submitted(submit(setup.server, "capped", body, headers=CALLER))
    callback_line(setup.server, job_id)
    document = finished(setup.server, job_id, CALLER)
    assert document["status"] == "failed", document
    assert document["error"].startswith("attempt 1 of 1 failed: internal server error ("), document
    [request] = setup.receiver.to("/hooks/failed")
    assert verified(request) == {
        "id": job_id, "status": "failed", "model": "capped", "version": None, "error": document["error"],
    }, "the callback says failed, with the reason the job records"  # fmt: skip
    assert recorded_callback(setup.server, job_id)["status"] == "delivered"


def test_a_failing_receiver_is_retried_and_a_dead_one_given_up_and_the_job_says_so(setup: Setup) -> None:
    flaky = submitted(submit(setup.server, "doubler", with_callback(setup.hook("/flaky")), headers=CALLER))
    down = submitted(submit(setup.server, "doubler", with_callback(setup.hook("/down")), headers=CALLER))
    assert recorded_callback(setup.server, flaky) == {
        "url": setup.hook("/flaky"), "status": "delivered", "attempts": 2,
        "detail": "delivered on attempt 2 (HTTP 204)",
    }  # fmt: skip
    assert recorded_callback(setup.server, down) == {
        "url": setup.hook("/down"), "status": "failed", "attempts": 3,
        "detail": "gave up after 3 attempt(s): HTTP 500",
    }  # fmt: skip
    line = callback_line(setup.server, down)
    assert (line["delivered"], line["attempts"], line["status"]) == (False, 3, 500), line
    assert len(setup.receiver.to("/down")) == 3, "async_callback_max_attempts POSTs, then no more"
    assert len(setup.receiver.to("/flaky")) == 2, "a 503, then the 204"


@pytest.mark.parametrize(
    ("callback", "message"),
    [
        ("https://evil.example.com/hook", "callback host 'evil.example.com' is not an allowed callback host"),
        ("http://127.0.0.1:1/hook", "callback host '127.0.0.1:1' is an IP address that is not an allowed"),
        ("https://user@hooks.example.com/", "must not carry user information"),
        ("ftp://127.0.0.1/hook", "callback URL must use https, not 'ftp'"),
        (17, "request parameter 'callback_url' must be a string (a URL)"),
    ],
)
def test_a_disallowed_callback_is_refused_at_submit_and_nothing_is_queued(
    setup: Setup, callback: object, message: str
) -> None:
    keys, submits = job_keys(setup.redis), len(access_events(setup.server, "job_submitted"))
    answer = submit(setup.server, "doubler", with_callback(callback), headers=CALLER)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"], answer.json()
    assert job_keys(setup.redis) == keys, "a refused job leaves no record"
    assert setup.redis.client().xlen(setup.stream) == 0, "nothing was queued"
    assert len(access_events(setup.server, "job_submitted")) == submits, "nothing was submitted"


def test_two_different_callback_urls_are_refused(setup: Setup) -> None:
    headers = {"x-callback-url": setup.hook("/a"), **CALLER}
    answer = submit(setup.server, "doubler", with_callback(setup.hook("/b")),
                    headers=headers)  # fmt: skip
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == (
        "the callback URL is given twice, differently (the x-callback-url header and the request parameter "
        "'callback_url'); give it once"
    ), answer.json()


def test_a_server_without_callback_hosts_answers_501_and_queues_nothing(
    tmp_path: Path, repository: Path, redis_server: RedisServer
) -> None:
    stream = f"no-callbacks-{time.monotonic_ns()}"
    server = start_async_server(repository, tmp_path, redis_server, stream)
    try:
        answer = submit(server, "doubler", with_callback("https://hooks.example.com/"))
        assert answer.status_code == 501, answer.text
        assert answer.json() == {"error": "callbacks are not configured on this server"}, answer.json()
        assert redis_server.client().xlen(stream) == 0, "nothing was queued"
        submitted(submit(server, "doubler", doubler(**{"async": True})))  # a job without one is taken
    finally:
        assert server.stop() == 0, server.stderr()


def test_an_unusable_callback_configuration_stops_the_server_with_exit_2(
    tmp_path: Path, repository: Path, redis_server: RedisServer
) -> None:
    short_key = tmp_path / "short.key"
    short_key.write_bytes(b"too short")
    env = {
        "SERVING_ASYNC_REDIS_URL": redis_server.url, "SERVING_ASYNC_CALLBACK_HOSTS": "hooks.example.com",
        "SERVING_ASYNC_CALLBACK_SECRET_FILE": str(short_key),
    }  # fmt: skip
    with pytest.raises(AssertionError, match="server exited with 2"):
        start_server(repository, tmp_path / "logs", env=env)
    stderr = (tmp_path / "logs" / "stderr.log").read_text()
    assert "invalid setting: callbacks: the callback key file" in stderr and "holds 9 bytes" in stderr, stderr


def test_at_sigterm_a_callback_still_going_is_left_for_another_worker_which_delivers_it(
    tmp_path: Path, repository: Path, key_file: Path, redis_server: RedisServer
) -> None:
    stream = f"callback-drain-{time.monotonic_ns()}"
    client: Any = redis_server.client()
    with ReceiverThread(paths={"/hang-once": [Answer(hang=True), Answer(204)]}) as receiver:
        settings = callback_settings(
            receiver, key_file, async_callback_timeout_s=60, async_visibility_timeout_s=1
        )
        server = start_async_server(repository, tmp_path / "first", redis_server, stream, async_worker=True,
                                    grace_period_seconds=2, **settings)  # fmt: skip
        hook = f"{receiver.origin}/hang-once"
        try:
            job_id = submitted(submit(server, "doubler", with_callback(hook), headers=CALLER))
            wait_until(lambda: len(receiver.to("/hang-once")) == 1, 30, "the callback was not sent")
            started = time.monotonic()
            code = server.stop(timeout=30)
            elapsed = time.monotonic() - started
        finally:
            server.stop()
        assert code == 0, server.stderr()
        assert elapsed < 2 + 3, f"the drain took {elapsed:.1f} s with a grace period of 2 s"
        [left] = [line for line in access_events(server, "job_callback_left") if line["job_id"] == job_id]
        assert (left["attempts"], left["reason"]) == (1, LEFT_REASON), left
        assert not access_events(server, "job_callback"), "no outcome: the callback was not given up"
        [stopped] = logged_events(server.stderr(), "async_worker_stopped")
        assert stopped["abandoned_callbacks"] == 1 and stopped["callbacks_left"] == 1, stopped
        assert client.hget(f"job:{job_id}", "callback_status") == b"sending", "not recorded as given up"
        assert client.xpending(f"{stream}:callbacks", "callbacks")["pending"] == 1, "left unacknowledged"

        second = start_async_server(repository, tmp_path / "second", redis_server, stream, async_worker=True,
                                    **settings)  # fmt: skip
        try:
            line = callback_line(second, job_id)
            assert (line["delivered"], line["attempts"], line["deliveries"]) == (True, 1, 2), line
            detail = "delivered on attempt 1 (HTTP 204)"
            assert recorded_callback(second, job_id) == {
                "url": hook, "status": "delivered", "attempts": 1, "detail": detail,
            }  # fmt: skip
        finally:
            assert second.stop() == 0, second.stderr()
        first, again = receiver.to("/hang-once")
        assert verified(first) == verified(again), "the same document, sent again by the second worker"
        assert client.xlen(f"{stream}:callbacks") == 0, "the entry is acknowledged and deleted"


CRASH_JOBS = 200


def test_a_worker_killed_while_sending_callbacks_loses_none_another_worker_delivers_them(
    tmp_path: Path, repository: Path, key_file: Path, redis_server: RedisServer
) -> None:
    """The first worker stores every result and holds every callback, MAX_CALLBACK_CONNECTIONS of them
    POSTed to a receiver that holds the requests open, when it is SIGKILLed; a second worker claims
    them after the visibility timeout and delivers each; the receiver sees every job, signed."""
    stream = f"callback-crash-{time.monotonic_ns()}"
    client: Any = redis_server.client()
    hung = MAX_CALLBACK_CONNECTIONS
    with ReceiverThread(paths={"/crash": [Answer(hang=True)] * hung + [Answer(204)]}) as receiver:
        settings = callback_settings(
            receiver, key_file, async_callback_timeout_s=60, async_visibility_timeout_s=1
        )
        api = start_async_server(repository, tmp_path / "api", redis_server, stream, **settings)
        workers: list[ServerProcess] = []
        try:
            body = with_callback(f"{receiver.origin}/crash")
            ids = [submitted(submit(api, "doubler", body, headers=CALLER)) for _ in range(CRASH_JOBS)]
            workers.append(start_async_server(repository, tmp_path / "w1", redis_server, stream,
                                              async_worker=True, **settings))  # fmt: skip

            def held() -> int:
                return int(client.xpending(f"{stream}:callbacks", "callbacks")["pending"])

            wait_until(lambda: held() == CRASH_JOBS and len(receiver.to("/crash")) == hung, 30,
                       lambda: f"{held()} callbacks held, {len(receiver.to('/crash'))} POSTed")  # fmt: skip
            assert client.xlen(stream) == 0, "every result was stored before the kill"
            workers[0].process.kill()
            workers[0].process.wait(timeout=10)
            workers[0].stopped = True
            assert not access_events(workers[0], "job_callback"), "the killed worker delivered none"

            workers.append(start_async_server(repository, tmp_path / "w2", redis_server, stream,
                                              async_worker=True, **settings))  # fmt: skip

            def delivered() -> int:
                pipe = client.pipeline(transaction=False)
                for job_id in ids:
                    pipe.hget(f"job:{job_id}", "callback_status")
                return sum(1 for status in pipe.execute() if status == b"delivered")

            wait_until(lambda: delivered() == CRASH_JOBS, 60, lambda: f"{delivered()} callbacks delivered")
            assert (client.xlen(f"{stream}:callbacks"), held()) == (0, 0), "every entry acknowledged"
            lines = access_events(workers[1], "job_callback")
            assert sorted(line["job_id"] for line in lines) == sorted(ids), "the second worker sent each"
            assert {(line["delivered"], line["deliveries"]) for line in lines} == {(True, 2)}, lines[:3]
        finally:
            for worker in workers:
                if not worker.stopped:
                    assert worker.stop() == 0, worker.stderr()
            assert api.stop() == 0, api.stderr()
        seen = Counter(signed_id(request) for request in receiver.to("/crash"))
    assert set(seen) == set(ids), "every job's callback arrived"
    duplicates = sum(seen.values()) - CRASH_JOBS
    assert set(seen.values()) <= {1, 2} and duplicates >= hung, f"{duplicates} duplicates: {seen}"
    print(
        f"\ncallback crash test: {CRASH_JOBS} jobs; the first worker killed holding {CRASH_JOBS} callbacks "
        f"({hung} POSTs held open by the receiver); the receiver saw {sum(seen.values())} POSTs, every job "
        f"at least once, {duplicates} duplicates; {CRASH_JOBS} callbacks recorded delivered"
    )


def signed_id(request: Received) -> str:
    """The job id of a callback whose signature ``job_callbacks.verify_signature`` accepts."""
    timestamp, signature = request.headers["x-signature-timestamp"], request.headers["x-signature"]
    assert verify_signature(KEY, request.body, timestamp, signature, time.time()), "the signature must verify"
    job_id: str = json.loads(request.body)["id"]
    return job_id
