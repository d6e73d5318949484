"""The guarantees of asynchronous inference, with real server processes and a real redis-server.

- Crash: 10,000 jobs; the worker process is SIGKILLed in the middle of its backlog, a second one
  is started and drained with SIGTERM part-way, a third finishes: every job has exactly one stored
  result, its own (checked id by id against the synchronous answer for its input and version),
  none is lost, and the jobs the killed worker held were delivered again after the visibility timeout.
- Poison: a job whose model the worker lacks, and a job that fails in ONNX Runtime, land in the
  dead-letter stream after ``async_max_attempts`` attempts with the reason; the jobs that shared
  the poison job's batch are not harmed.
"""

import http.client
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.serving_image.async_jobs import (
    TABULAR,
    access_events,
    finished,
    infer_body,
    rows,
    start_async_server,
    submit,
    submitted,
)
from tests.serving_image.conftest import (
    ServerProcess,
    capped_doubler_graph,
    logged_events,
    save_model,
    wait_until,
    write_config,
)
from tests.serving_image.redis_fixture import RedisServer, start_redis

JOBS = 10_000
DISTINCT_INPUTS = 50
SUBMITTERS = 4
GROUP = "workers"


def submit_all(server: ServerProcess, bodies: list[bytes]) -> list[str]:
    """POST each body with ``Prefer: respond-async`` over a few keep-alive connections; the ids in order."""

    def post_share(share: int) -> list[tuple[int, str]]:
        connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
        headers = {"content-type": "application/json", "prefer": "respond-async"}
        ids = []
        try:
            for index in range(share, len(bodies), SUBMITTERS):
                connection.request("POST", f"/v2/models/{TABULAR}/infer", bodies[index], headers)
                answer = connection.getresponse()
                document = json.loads(answer.read())
                assert answer.status == 202, f"job {index}: {answer.status} {document}"
                ids.append((index, document["id"]))
        finally:
            connection.close()
        return ids

    with ThreadPoolExecutor(SUBMITTERS) as pool:
        shares = list(pool.map(post_share, range(SUBMITTERS)))
    return [job_id for _, job_id in sorted(pair for share in shares for pair in share)]


def consumer_of(worker: ServerProcess) -> str:
    wait_until(lambda: logged_events(worker.stderr(), "async_worker_started"), 10, "the worker did not start")
    consumer: str = logged_events(worker.stderr(), "async_worker_started")[0]["consumer"]
    return consumer


def held_by(client: Any, stream: str, consumer: str) -> int:
    """Entries the consumer took and has not acknowledged."""
    return len(client.xpending_range(stream, GROUP, "-", "+", JOBS, consumername=consumer))


def expected_outputs(api: ServerProcess, inputs: np.ndarray) -> dict[tuple[int, str], dict[str, Any]]:
    """The synchronous answer for each distinct input on each version: what every job's result must be."""
    expected = {}
    for index in range(len(inputs)):
        for version in ("1", "2"):
            answer = submit(api, TABULAR, infer_body(inputs[index : index + 1]), version=version)
            assert answer.status_code == 200, answer.text
            expected[(index, version)] = {out["name"]: out["data"] for out in answer.json()["outputs"]}
    return expected


def test_a_worker_killed_mid_run_loses_nothing_and_stores_every_result_once(
    tmp_path: Path, test_repository: Path, redis_server: RedisServer, job_stream: str
) -> None:
    client = redis_server.client()
    settings: dict[str, object] = {"async_visibility_timeout_s": 2, "async_max_queued": JOBS}
    api = start_async_server(test_repository, tmp_path / "api", redis_server, job_stream, **settings)
    workers: list[ServerProcess] = []
    try:
        inputs = rows(DISTINCT_INPUTS, seed=7)
        expected = expected_outputs(api, inputs)
        bodies = [
            json.dumps(
                infer_body(inputs[n % DISTINCT_INPUTS : n % DISTINCT_INPUTS + 1], id=f"job-{n}")
            ).encode()
            for n in range(JOBS)
        ]
        ids = submit_all(api, bodies)
        assert len(set(ids)) == JOBS and client.xlen(job_stream) == JOBS, "every job queued once"

        def done() -> int:
            return JOBS - client.xlen(job_stream)

        # The first worker is killed in the middle of the backlog, with jobs in hand.
        workers.append(start_async_server(test_repository, tmp_path / "w1", redis_server, job_stream,
                                          async_worker=True, **settings))  # fmt: skip
        killed = consumer_of(workers[0])
        wait_until(lambda: done() >= 3_000, 30, lambda: f"the first worker finished {done()} jobs")
        workers[0].process.kill()
        workers[0].process.wait(timeout=10)
        workers[0].stopped = True
        held = held_by(client, job_stream, killed)
        done_at_kill = done()
        assert held > 0 and done_at_kill < JOBS, f"killed holding {held} jobs, {done_at_kill} done"

        # The second drains on SIGTERM part-way: it finishes what it holds and exits 0.
        workers.append(start_async_server(test_repository, tmp_path / "w2", redis_server, job_stream,
                                          async_worker=True, **settings))  # fmt: skip
        drained = consumer_of(workers[1])
        wait_until(lambda: done() >= done_at_kill + 2_000, 30, lambda: f"{done()} jobs done")
        assert workers[1].stop() == 0, f"the worker did not drain cleanly: {workers[1].stderr()}"
        assert held_by(client, job_stream, drained) == 0, "a drained worker leaves no job unacknowledged"
        left_after_drain = client.xlen(job_stream)

        # The third finishes everything, the killed worker's jobs included (after the visibility timeout).
        workers.append(start_async_server(test_repository, tmp_path / "w3", redis_server, job_stream,
                                          async_worker=True, **settings))  # fmt: skip
        wait_until(lambda: done() == JOBS, 60, lambda: f"only {done()} of {JOBS} jobs done")
        assert workers[2].stop() == 0, workers[2].stderr()

        assert client.xpending(job_stream, GROUP)["pending"] == 0, "every delivery was acknowledged"
        assert client.xlen(f"{job_stream}:dead") == 0, "no job was dead-lettered"
        attempts = check_every_result(client, ids, inputs, expected)
        assert attempts[2] == held, f"the {held} jobs the killed worker held ran again: {attempts}"
        assert set(attempts) <= {1, 2}, f"no job ran more than twice: {attempts}"
        duplicates = sum(len(access_events(worker, "job_duplicate")) for worker in workers[1:])
        print(
            f"\ncrash test: {JOBS} jobs; the first worker killed at {done_at_kill} done, holding {held}; "
            f"{left_after_drain} left after the second drained; attempts {dict(attempts)}; "
            f"{duplicates} results computed again and dropped; {JOBS} results stored, one each"
        )
        sample = [ids[n] for n in range(0, JOBS, JOBS // 50)]
        for job_id in sample:  # and through the API, as a client collects them
            assert finished(api, job_id)["status"] == "done", job_id
    finally:
        for worker in workers:
            if not worker.stopped:
                worker.process.kill()
        assert api.stop() == 0, api.stderr()


def check_every_result(
    client: Any, ids: list[str], inputs: np.ndarray, expected: dict[tuple[int, str], dict[str, Any]]
) -> Counter[int]:
    """Each job's stored record: done, one result, its own (its request id, its input's answer); attempts."""
    attempts: Counter[int] = Counter()
    for start in range(0, len(ids), 1000):
        pipe = client.pipeline(transaction=False)
        for job_id in ids[start : start + 1000]:
            pipe.hgetall(f"job:{job_id}")
        for offset, record in enumerate(pipe.execute()):
            n = start + offset
            assert record.get(b"state") == b"done", f"job {n} ({ids[n]}) is not done: {record}"
            result = json.loads(record[b"result"])
            version = result["model_version"]
            assert result["id"] == f"job-{n}", f"job {n} holds the result of {result['id']}"
            assert record[b"version"].decode() == version, f"job {n}: the served version is recorded"
            got = {out["name"]: out["data"] for out in result["outputs"]}
            want = expected[(n % len(inputs), version)]
            assert got["label"] == want["label"], f"job {n}: {got} != {want}"
            np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-5, atol=1e-7)
            attempts[int(record[b"attempts"])] += 1
    assert sum(attempts.values()) == len(ids)
    return attempts


# --- poison jobs --------------------------------------------------------------------------------------------

CAPPED_ROWS = 10  # ONNX Runtime fails a run of the capped model on 10 rows or more


@pytest.fixture(scope="module")
def repositories(tmp_path_factory: pytest.TempPathFactory, test_repository: Path) -> tuple[Path, Path]:
    """The API's repository (doubler, capped) and the worker's, from which the doubler was removed."""
    api_repo = tmp_path_factory.mktemp("api-repository")
    shutil.copytree(test_repository / "doubler", api_repo / "doubler")
    save_model(capped_doubler_graph(CAPPED_ROWS), api_repo / "capped" / "1" / "model.onnx")
    write_config(api_repo / "capped", "max_batch_size: 64\nmax_queue_delay_ms: 0\n")
    worker_repo = tmp_path_factory.mktemp("worker-repository")
    shutil.copytree(api_repo / "capped", worker_repo / "capped")
    return api_repo, worker_repo


@pytest.fixture(scope="module")
def poison_stream() -> str:
    return f"poison-{os.urandom(4).hex()}"


@pytest.fixture(scope="module")
def poison_api(
    tmp_path_factory: pytest.TempPathFactory, repositories: tuple[Path, Path], redis_server: RedisServer,
    poison_stream: str,
) -> Iterator[ServerProcess]:  # fmt: skip
    """The API (no worker): jobs wait until a test starts its worker, so they are taken together."""
    process = start_async_server(repositories[0], tmp_path_factory.mktemp("poison-api"), redis_server,
                                 poison_stream, async_result_ttl_s=600)  # fmt: skip
    yield process
    assert process.stop() == 0, process.stderr()


def start_worker(
    tmp_path: Path, repositories: tuple[Path, Path], redis_server: RedisServer, stream: str
) -> ServerProcess:
    return start_async_server(
        repositories[1], tmp_path, redis_server, stream, async_worker=True, async_batch=4,
        async_max_attempts=3, async_visibility_timeout_s=0.3, async_result_ttl_s=600,
    )  # fmt: skip


def doubler_rows(count: int) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [count, 4], "datatype": "FP32", "data": [1.0] * (4 * count)}]}


def dead_letters(client: Any, stream: str) -> dict[str, dict[str, str]]:
    return {
        fields[b"id"].decode(): {
            key.decode(): value.decode() for key, value in fields.items() if key != b"body"
        }
        for _, fields in client.xrange(f"{stream}:dead")
    }


def test_a_job_whose_model_the_worker_lacks_is_dead_lettered_after_its_attempts(
    tmp_path: Path, repositories: tuple[Path, Path], redis_server: RedisServer, poison_api: ServerProcess,
    poison_stream: str,
) -> None:  # fmt: skip
    job_id = submitted(submit(poison_api, "doubler", doubler_rows(1), headers={"prefer": "respond-async"}))
    worker = start_worker(tmp_path, repositories, redis_server, poison_stream)
    try:
        client = redis_server.client()
        wait_until(lambda: job_id in dead_letters(client, poison_stream), 30, "the job was not dead-lettered")
        reason = "attempt 3 of 3 failed: unknown model 'doubler'"
        letter = dead_letters(client, poison_stream)[job_id]
        assert (letter["reason"], letter["attempts"], letter["model"]) == (reason, "3", "doubler"), letter
        document = finished(poison_api, job_id)
        assert (document["status"], document["error"], document["attempts"]) == ("failed", reason, 3), (
            document
        )
        wait_until(lambda: access_events(worker, "job_dead_lettered"), 10, "no dead-letter line")
        retries = [e for e in access_events(worker, "job_retry") if e["job_id"] == job_id]
        assert [e["attempts"] for e in retries] == [1, 2], retries
        assert retries[0]["reason"] == "unknown model 'doubler'", retries
    finally:
        assert worker.stop() == 0, worker.stderr()


def test_a_job_failing_in_the_runtime_is_dead_lettered_and_its_batch_mates_are_not_harmed(
    tmp_path: Path, repositories: tuple[Path, Path], redis_server: RedisServer, poison_api: ServerProcess,
    poison_stream: str,
) -> None:  # fmt: skip
    # One take of four (async_batch=4): the poison job first, so the four are stacked into one run.
    async_header = {"prefer": "respond-async"}
    poison = submitted(submit(poison_api, "capped", doubler_rows(CAPPED_ROWS + 2), headers=async_header))
    healthy = [
        submitted(submit(poison_api, "capped", doubler_rows(1), headers=async_header)) for _ in range(3)
    ]
    worker = start_worker(tmp_path, repositories, redis_server, poison_stream)
    try:
        client = redis_server.client()
        wait_until(
            lambda: poison in dead_letters(client, poison_stream), 30, "the poison job was not dead-lettered"
        )
        letter = dead_letters(client, poison_stream)[poison]
        assert letter["reason"].startswith("attempt 3 of 3 failed: internal server error ("), letter
        for job_id in healthy:
            document = finished(poison_api, job_id)
            assert (document["status"], document["attempts"]) == ("done", 1), document
            assert document["response"]["outputs"][0]["data"] == [2.0] * 4, document
        runs: Counter[tuple[str, int]] = Counter()
        for line in access_events(worker, "request"):
            if line["request_id"] in healthy:
                runs[(line["request_id"], line["status"])] += 1
        for (
            job_id
        ) in healthy:  # their run with the poison job failed; each ran again alone, in the same attempt
            assert (runs[(job_id, 500)], runs[(job_id, 200)]) == (1, 1), runs
        failures = logged_events(worker.stderr(), "job_run_failed")
        assert failures and all(f["job_id"] in (poison, *healthy) for f in failures), failures
        assert not [e for e in access_events(worker, "job_retry") if e["job_id"] in healthy], (
            "a healthy job retried"
        )
    finally:
        assert worker.stop() == 0, worker.stderr()


def test_a_worker_rides_out_a_redis_restart_and_the_jobs_on_either_side_finish(
    tmp_path: Path, test_repository: Path, job_stream: str
) -> None:
    redis = start_redis(tmp_path / "redis")  # its own: this test stops it
    api = start_async_server(test_repository, tmp_path / "api", redis, job_stream)
    worker = start_async_server(test_repository, tmp_path / "worker", redis, job_stream, async_worker=True)
    body, prefer = doubler_rows(1), {"prefer": "respond-async"}
    try:
        before = [submitted(submit(api, "doubler", body, headers=prefer)) for _ in range(20)]
        assert all(finished(api, job_id)["status"] == "done" for job_id in before)
        redis.stop()
        refused = submit(api, "doubler", body, headers=prefer)
        assert refused.status_code == 503, (
            f"a submit while Redis is down: {refused.status_code} {refused.text}"
        )
        wait_until(
            lambda: logged_events(worker.stderr(), "job_queue_unavailable"), 10, "the worker saw no outage"
        )
        redis = start_redis(redis.directory, redis.port)  # the same data, from the append-only file
        after = [submitted(submit(api, "doubler", body, headers=prefer)) for _ in range(20)]
        for job_id in before + after:
            document = finished(api, job_id)
            assert (document["status"], document["response"]["outputs"][0]["data"]) == ("done", [2.0] * 4), (
                document
            )
        assert worker.process.poll() is None, "the worker process went on through the outage"
    finally:
        assert worker.stop() == 0, worker.stderr()
        assert api.stop() == 0, api.stderr()
        redis.stop()
