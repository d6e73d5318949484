"""Asynchronous inference over REST, against server processes and a real redis-server.

``POST .../infer`` with ``"async": true`` or ``Prefer: respond-async`` answers 202 with a job id and
a Location; ``GET /v2/jobs/{id}`` reports the job, with the V2 response once it is done. A request
that would fail is refused at submit (4xx), never queued to fail later.
"""

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.serving_image.async_jobs import (
    TABULAR,
    access_events,
    async_body,
    finished,
    infer_body,
    infer_url,
    job,
    rows,
    start_async_server,
    submit,
    submitted,
)
from tests.serving_image.conftest import ServerProcess, free_port, start_server, wait_until
from tests.serving_image.redis_fixture import RedisServer

CALLER_HEADER = "x-caller"
ALICE = {CALLER_HEADER: "alice"}


@pytest.fixture(scope="module")
def async_server(
    tmp_path_factory: pytest.TempPathFactory, test_repository: Path, redis_server: RedisServer
) -> Iterator[ServerProcess]:
    """A server that takes jobs and runs them (async_worker), believing the caller header of a proxy."""
    process = start_async_server(
        test_repository, tmp_path_factory.mktemp("async-server"), redis_server, f"api-{os.urandom(4).hex()}",
        async_worker=True, async_visibility_timeout_s=5, trusted_proxy_header=CALLER_HEADER,
    )  # fmt: skip
    yield process
    assert process.stop() == 0, f"the server did not drain cleanly: {process.stderr()}"


def doubler_body(**extra: Any) -> dict[str, Any]:
    """A request for the test repository's doubler (y = 2x, x of shape [batch, 4])."""
    return {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}], **extra}


ASYNC = {"prefer": "respond-async"}


def outputs(document: dict[str, Any]) -> dict[str, Any]:
    return {output["name"]: output for output in document["outputs"]}


def test_a_job_is_accepted_with_202_and_its_result_is_the_synchronous_answer(
    async_server: ServerProcess,
) -> None:
    data = rows(3, seed=1)
    accepted = submit(async_server, TABULAR, async_body(data, id="job-a"), version="1", headers=ALICE)
    job_id = submitted(accepted)
    assert accepted.headers["x-model-version"] == "1", accepted.headers
    document = finished(async_server, job_id, ALICE)
    expected = submit(async_server, TABULAR, infer_body(data, id="job-a"), version="1").json()
    assert document["status"] == "done" and document["id"] == job_id, document
    assert (document["version"], document["version_requested"], document["attempts"]) == ("1", "1", 1), (
        document
    )
    assert document["response"]["id"] == "job-a", "the request's id is kept in the response"
    assert document["response"]["model_version"] == "1", document["response"]
    got, want = outputs(document["response"]), outputs(expected)
    assert got["label"]["data"] == want["label"]["data"], (got, want)
    np.testing.assert_allclose(got["probabilities"]["data"], want["probabilities"]["data"], rtol=1e-6)
    assert document["created"] <= document["started"] <= document["finished"], document


@pytest.mark.parametrize("prefer", ["respond-async", "wait=5, Respond-Async", "respond-async; x=1, wait=5"])
def test_prefer_respond_async_is_honoured_and_said_to_be(async_server: ServerProcess, prefer: str) -> None:
    # RFC 7240: preferences are comma-separated, case-insensitive tokens that may carry parameters.
    accepted = submit(
        async_server, TABULAR, infer_body(rows(1)), version="1", headers={"prefer": prefer, **ALICE}
    )
    job_id = submitted(accepted)
    assert accepted.headers["preference-applied"] == "respond-async", accepted.headers
    assert finished(async_server, job_id, ALICE)["status"] == "done"


def test_async_false_and_other_preferences_are_answered_synchronously(async_server: ServerProcess) -> None:
    body = infer_body(rows(1), parameters={"async": False})
    answer = submit(async_server, TABULAR, body, version="1", headers={"prefer": "return=minimal"})
    assert answer.status_code == 200, answer.text
    assert "outputs" in answer.json(), answer.json()


def test_the_variant_router_chooses_a_jobs_version_and_the_result_records_it(
    async_server: ServerProcess,
) -> None:
    # tabular-classifier's config routes x-segment: enterprise to version 2, whatever the weights say.
    accepted = submit(
        async_server, TABULAR, async_body(rows(2)), headers={"x-segment": "enterprise", **ALICE}
    )
    job_id = submitted(accepted)
    assert accepted.headers["x-model-version"] == "2", accepted.headers
    document = finished(async_server, job_id, ALICE)
    assert (document["version"], document["version_requested"]) == ("2", None), document
    assert document["response"]["model_version"] == "2", document["response"]


def test_binary_inputs_are_queued_and_binary_outputs_come_back_as_json(async_server: ServerProcess) -> None:
    data = rows(2, seed=3)
    header = json.dumps({
        "inputs": [{"name": "features", "shape": [2, 30], "datatype": "FP32",
                    "parameters": {"binary_data_size": data.nbytes}}],
        "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
        "parameters": {"async": True},
    }).encode()  # fmt: skip
    answer = requests.post(
        infer_url(async_server, TABULAR, "1"), data=header + data.tobytes(), timeout=10,
        headers={"inference-header-content-length": str(len(header)), **ALICE},
    )  # fmt: skip
    document = finished(async_server, submitted(answer), ALICE)
    expected = submit(async_server, TABULAR, infer_body(data), version="1").json()
    label = outputs(document["response"])["label"]
    assert label["data"] == outputs(expected)["label"]["data"], label
    assert "parameters" not in label, "a stored result is JSON: no binary_data_size"


# Each is refused at submit with the status and the error a synchronous request gets.
REFUSED: list[tuple[str, str, str | None, Any, int, str]] = [
    ("unknown model", "no-such-model", None, async_body(rows(1)), 404, "unknown model 'no-such-model'"),
    ("unknown version", TABULAR, "9", async_body(rows(1)), 404, f"model '{TABULAR}' has no version '9'"),
    ("wrong shape", TABULAR, "1", async_body(rows(1)[:, :3]), 400, "dimension 1 is 3, the model expects 30"),
    ("unknown input", TABULAR, "1", infer_body(rows(1), name="x", parameters={"async": True}), 400,
     "unknown input 'x'"),
    ("too many rows", TABULAR, "1", async_body(rows(65)), 400, "exceeds the model's max_batch_size 64"),
    ("unknown output", TABULAR, "1", async_body(rows(1), outputs=[{"name": "nope"}]), 400,
     "unknown output 'nope'"),
    ("async not a boolean", TABULAR, "1", infer_body(rows(1), parameters={"async": "yes"}), 400,
     "request parameter 'async' must be true or false"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("model", "version", "body", "status", "error"),
    [case[1:] for case in REFUSED],
    ids=[c[0] for c in REFUSED],
)
def test_a_request_that_would_fail_is_refused_at_submit_and_never_queued(
    async_server: ServerProcess, model: str, version: str | None, body: Any, status: int, error: str
) -> None:
    request_id = f"refused-{os.urandom(4).hex()}"
    answer = submit(async_server, model, body, version, headers={"x-request-id": request_id})
    assert answer.status_code == status, f"{answer.status_code}: {answer.text}"
    assert error in answer.json()["error"], answer.json()
    wait_until(
        lambda: any(line["request_id"] == request_id for line in access_events(async_server, "request")),
        10, "the refused request is logged",
    )  # fmt: skip
    queued = [e for e in access_events(async_server, "job_submitted") if e["request_id"] == request_id]
    assert not queued, f"a refused request was queued: {queued}"


def test_malformed_json_that_names_async_is_a_400(async_server: ServerProcess) -> None:
    answer = requests.post(
        infer_url(async_server, TABULAR, "1"), data=b'{"parameters": {"async": true}', timeout=10
    )
    assert answer.status_code == 400 and answer.json()["error"].startswith("malformed JSON"), answer.text


@pytest.mark.parametrize("job_id", ["0" * 32, "not-a-job-id", "F" * 32])
def test_an_unknown_job_is_a_404_json(async_server: ServerProcess, job_id: str) -> None:
    answer = job(async_server, job_id)
    assert answer.status_code == 404, answer.text
    assert answer.headers["content-type"] == "application/json", answer.headers
    assert answer.json() == {"error": "no job with this id: unknown, or finished and expired"}


def test_a_job_is_shown_only_to_the_caller_that_submitted_it(async_server: ServerProcess) -> None:
    job_id = submitted(submit(async_server, TABULAR, async_body(rows(1)), "1", headers=ALICE))
    assert finished(async_server, job_id, ALICE)["status"] == "done"
    for other in ({CALLER_HEADER: "mallory"}, {}):
        answer = job(async_server, job_id, other)
        assert answer.status_code == 404, f"{other}: {answer.status_code} {answer.text}"


def test_the_location_under_the_models_path_answers_only_for_that_model(async_server: ServerProcess) -> None:
    # The gateway routes and authorizes /v2/models/{m}/* by model: the job must be followed there.
    accepted = submit(async_server, TABULAR, async_body(rows(1)), "1", headers=ALICE)
    job_id = submitted(accepted)
    finished(async_server, job_id, ALICE)
    followed = requests.get(async_server.base + accepted.headers["location"], headers=ALICE, timeout=10)
    assert followed.status_code == 200 and followed.json()["id"] == job_id, followed.text
    assert followed.json() == job(async_server, job_id, ALICE).json(), "both paths show the same job"
    elsewhere = requests.get(f"{async_server.base}/v2/models/other/jobs/{job_id}", headers=ALICE, timeout=10)
    assert elsewhere.status_code == 404, f"a job under another model's path: {elsewhere.text}"


def test_every_job_is_in_the_access_log_with_its_id_and_caller(async_server: ServerProcess) -> None:
    request_id = f"logged-{os.urandom(4).hex()}"
    accepted = submit(async_server, TABULAR, async_body(rows(1)), "1", {"x-request-id": request_id, **ALICE})
    job_id = submitted(accepted)
    finished(async_server, job_id, ALICE)

    def lines() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        requests_logged = access_events(async_server, "request")
        return (
            [e for e in access_events(async_server, "job_submitted") if e["job_id"] == job_id],
            [e for e in requests_logged if e["request_id"] == request_id],
            [e for e in requests_logged if e["request_id"] == job_id],
        )

    wait_until(lambda: all(lines()), 10, lambda: f"missing access-log lines: {lines()}")
    [queued], [http], [run] = lines()
    assert queued == {**queued, "request_id": request_id, "caller": "alice", "model": TABULAR, "version": "1"}
    assert (http["status"], http["outcome"], http["caller"]) == (202, "accepted", "alice"), http
    assert (run["protocol"], run["status"], run["outcome"]) == ("async", 200, "success"), run
    assert (run["caller"], run["model"], run["version"]) == ("alice", TABULAR, "1"), run


# --- servers configured otherwise ---------------------------------------------------------------------------


def test_without_a_queue_an_async_request_is_501_and_a_synchronous_one_is_served(
    server: ServerProcess,
) -> None:
    not_configured = {"error": "asynchronous inference is not configured"}
    by_parameter = submit(server, TABULAR, async_body(rows(1)), "1")
    by_header = submit(server, TABULAR, infer_body(rows(1)), "1", headers={"prefer": "respond-async"})
    status = job(server, "0" * 32)
    for answer in (by_parameter, by_header, status):
        assert answer.status_code == 501, f"{answer.request.method} {answer.url}: {answer.status_code}"
        assert answer.json() == not_configured, answer.text
    assert submit(server, TABULAR, infer_body(rows(1)), "1").status_code == 200


def test_a_full_queue_answers_429_json(
    tmp_path: Path, test_repository: Path, redis_server: RedisServer, job_stream: str
) -> None:
    # No worker: the jobs stay queued, so the fourth exceeds the bound.
    process = start_async_server(test_repository, tmp_path, redis_server, job_stream, async_max_queued=3)
    try:
        for _ in range(3):
            submitted(submit(process, "doubler", doubler_body(), headers=ASYNC))
        refused = submit(process, "doubler", doubler_body(parameters={"async": True}))
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"] == "application/json"
        assert refused.json() == {"error": "the job queue is full (3 jobs waiting or running); retry later"}
        assert redis_server.client().xlen(job_stream) == 3, "the refused job is not queued"
    finally:
        assert process.stop() == 0, process.stderr()


def test_results_are_gone_once_their_time_has_passed(
    tmp_path: Path, test_repository: Path, redis_server: RedisServer, job_stream: str
) -> None:
    process = start_async_server(
        test_repository, tmp_path, redis_server, job_stream, async_worker=True, async_result_ttl_s=1
    )
    try:
        job_id = submitted(submit(process, "doubler", doubler_body(), headers=ASYNC))
        document = finished(process, job_id)
        assert document["response"]["outputs"][0]["data"] == [2, 4, 6, 8], document
        ttl = redis_server.client().pttl(f"job:{job_id}")
        assert 0 < ttl <= 1000, f"the result expires within async_result_ttl_s: PTTL {ttl}"
        wait_until(lambda: job(process, job_id).status_code == 404, 10, "the result did not expire")
        assert not redis_server.client().exists(f"job:{job_id}"), "nothing of the job is left"
    finally:
        assert process.stop() == 0, process.stderr()


def test_an_unreachable_queue_is_a_503_and_synchronous_requests_still_serve(
    tmp_path: Path, test_repository: Path
) -> None:
    env = {"SERVING_ASYNC_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    process = start_server(test_repository, tmp_path, env=env)
    try:
        refused = submit(process, "doubler", doubler_body(), headers=ASYNC)
        assert refused.status_code == 503, refused.text
        assert refused.json() == {"error": "the job queue is unavailable (ConnectionError); retry later"}
        answer = submit(process, "doubler", doubler_body())
        assert answer.status_code == 200, "the synchronous path does not need Redis"
        started = [line for line in access_events(process, "request") if line["status"] == 503]
        assert started and started[0]["outcome"] == "unavailable", started
    finally:
        assert process.stop() == 0, process.stderr()
