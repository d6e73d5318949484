"""Feedback on served requests: parsing, the bounded store, and the endpoint with its metrics."""

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from serving_image.errors import InvalidInput, ModelNotFound
from serving_image.feedback import (
    AlreadyRecorded,
    FeedbackLimiter,
    ServedRequests,
    TooManyFeedbacks,
    parse_feedback,
)
from tests.serving_image.auth_tokens import AUDIENCE, ISSUER, JwksServer, claims, jwks, rsa_key, sign
from tests.serving_image.conftest import ServerProcess, start_server, wait_until
from tests.serving_image.test_metrics import sample


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"converted": True}, "exactly one of 'request_id' or 'version'"),
        ({"request_id": "a", "version": "1", "converted": True}, "exactly one of 'request_id' or 'version'"),
        ({"version": "1"}, "exactly one of 'converted'"),
        ({"version": "1", "converted": "yes"}, "'converted' must be true or false"),
        ({"version": "1", "value": float("nan")}, "'value' must be a finite number"),
        ({"version": "1", "value": True}, "'value' must be a finite number"),
        ({"version": 2, "value": 1}, "'version' must be a non-empty string"),
        ({"version": "1", "value": 1, "extra": 1}, "unknown feedback field(s) ['extra']"),
        ({"version": "1", "value": -3}, "'value' must not be negative"),
        ({"version": "1", "value": 1e200}, "'value' must be at most 1e+12"),
    ],
)
def test_bad_feedback_is_rejected(document: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_feedback(document)
    assert message in raised.value.message


def test_store_forgets_the_oldest_beyond_capacity() -> None:
    store = ServedRequests(capacity=2)
    for n in range(3):
        store.remember(f"r{n}", "m", str(n))
    assert store.version_of("m", "r2") == "2"
    with pytest.raises(ModelNotFound):
        store.version_of("m", "r0")
    with pytest.raises(ModelNotFound):
        store.version_of("other", "r1")


def test_feedback_by_request_id_counts_against_the_serving_version(server: ServerProcess) -> None:
    body: dict[str, Any] = {
        "inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "data": [0.5] * 30}]
    }
    served = requests.post(
        f"{server.base}/v2/models/tabular-classifier/infer",
        json=body,
        headers={"x-segment": "enterprise"},
        timeout=5,
    )
    assert served.ok, served.text
    request_id = served.headers["x-request-id"]
    before = requests.get(server.base + "/metrics", timeout=5).text
    url = f"{server.base}/v2/models/tabular-classifier/feedback"
    answer = requests.post(url, json={"request_id": request_id, "converted": True}, timeout=5)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"model": "tabular-classifier", "version": "2", "recorded": True}
    assert requests.post(url, json={"version": "1", "value": 12.5}, timeout=5).ok
    after = requests.get(server.base + "/metrics", timeout=5).text
    labels = {"model": "tabular-classifier", "version": "2", "kind": "converted"}
    assert (
        sample(after, "serving_feedback_total", **labels) - sample(before, "serving_feedback_total", **labels)
        == 1
    )
    value = {"model": "tabular-classifier", "version": "1"}
    assert sample(after, "serving_feedback_value_total", **value) - sample(
        before, "serving_feedback_value_total", **value
    ) == pytest.approx(12.5)
    assert sample(after, "serving_feedback_value_squares_total", **value) - sample(
        before, "serving_feedback_value_squares_total", **value
    ) == pytest.approx(156.25), "the squares give the analysis the variance"


def test_feedback_names_only_ids_the_server_minted(server: ServerProcess) -> None:
    body: dict[str, Any] = {
        "inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "data": [0.5] * 30}]
    }
    served = requests.post(
        f"{server.base}/v2/models/tabular-classifier/infer",
        json=body,
        headers={"x-request-id": "client-chosen-1"},
        timeout=5,
    )
    assert served.ok and served.headers["x-request-id"] == "client-chosen-1", "a clean client id is echoed"
    answer = requests.post(
        f"{server.base}/v2/models/tabular-classifier/feedback",
        json={"request_id": "client-chosen-1", "converted": True},
        timeout=5,
    )
    assert answer.status_code == 404, "a client-chosen id must not be accepted for feedback"


def test_feedback_for_an_unknown_request_or_model_is_404(server: ServerProcess) -> None:
    unknown = requests.post(
        f"{server.base}/v2/models/tabular-classifier/feedback",
        json={"request_id": "never-served", "converted": False},
        timeout=5,
    )
    assert unknown.status_code == 404 and "never-served" in unknown.json()["error"]
    assert (
        requests.post(
            f"{server.base}/v2/models/nope/feedback", json={"version": "1", "value": 1}, timeout=5
        ).status_code
        == 404
    )
    assert (
        requests.post(
            f"{server.base}/v2/models/tabular-classifier/feedback", data=b"{", timeout=5
        ).status_code
        == 400
    )


# Feedback that cannot be forged or replayed: a server with auth_mode=jwt, feedback limited to 5 at once.

FEEDBACK = "models:doubler:infer models:doubler:feedback"
BODY: dict[str, Any] = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
KEY = rsa_key("feedback-key")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, test_repository: Path) -> Iterator[ServerProcess]:
    with JwksServer(jwks(KEY)).running() as issuer:
        env = {
            "SERVING_AUTH_MODE": "jwt",
            "SERVING_AUTH_JWKS_URL": issuer.url,
            "SERVING_AUTH_ISSUER": ISSUER,
            "SERVING_AUTH_AUDIENCES": AUDIENCE,
            "SERVING_FEEDBACK_BURST": "5",
            "SERVING_FEEDBACK_RATE_PER_SECOND": "0.5",
        }
        process = start_server(test_repository, tmp_path_factory.mktemp("feedback-logs"), env=env)
        yield process
        assert process.stop() == 0, process.stderr()


def as_caller(subject: str, scope: str = FEEDBACK) -> dict[str, str]:
    return {"authorization": f"Bearer {sign(KEY, claims(subject=subject, scope=scope))}"}


def served_to(server: ServerProcess, subject: str) -> str:
    answer = requests.post(
        f"{server.base}/v2/models/doubler/infer", json=BODY, headers=as_caller(subject), timeout=10
    )
    assert answer.ok, answer.text
    return answer.headers["x-request-id"]


def post(server: ServerProcess, document: dict[str, Any], headers: dict[str, str]) -> requests.Response:
    return requests.post(
        f"{server.base}/v2/models/doubler/feedback", json=document, headers=headers, timeout=10
    )


def test_feedback_counts_once_and_only_for_the_caller_served(secured: ServerProcess) -> None:
    request_id = served_to(secured, "alice")
    first = post(secured, {"request_id": request_id, "converted": True}, as_caller("alice"))
    assert first.status_code == 200, first.text
    replay = post(secured, {"request_id": request_id, "converted": True}, as_caller("alice"))
    assert replay.status_code == 409 and "already recorded" in replay.json()["error"], replay.text
    other = served_to(secured, "alice")
    stolen = post(secured, {"request_id": other, "converted": True}, as_caller("bob"))
    assert stolen.status_code == 404, "another caller's request id answers as an unknown one"
    unknown = post(secured, {"request_id": "never-served", "value": 1}, as_caller("bob"))
    assert unknown.status_code == 404, unknown.text
    # One stream, in order: once a later request's line is in the access log, all feedback before it is.
    marker = served_to(secured, "alice")
    wait_until(lambda: marker in secured.stdout(), 5, "the access log never showed the last request")
    logged = [json.loads(line) for line in secured.stdout().splitlines() if '"event":"feedback"' in line]
    assert [(r["request_id"], r["caller"], r["kind"], r["version"]) for r in logged] == [
        (request_id, "alice", "converted", "1")
    ], "each accepted feedback, and only those, is in the access log"


@pytest.mark.parametrize(
    ("headers", "document", "status"),
    [
        (lambda: {}, {"version": "1", "value": 1}, 401),
        (lambda: as_caller("carl", scope="models:doubler:infer"), {"request_id": "r", "value": 1}, 403),
        (lambda: as_caller("carl", scope="models:other:feedback"), {"request_id": "r", "value": 1}, 403),
        (lambda: as_caller("carl"), {"version": "1", "value": 1}, 403),
        (
            lambda: as_caller("carl", scope="models:doubler:feedback models:doubler:admin"),
            {"version": "1", "value": 1},
            200,
        ),
    ],
)
def test_feedback_needs_the_feedback_scope_and_admin_to_name_a_version(
    secured: ServerProcess, headers: Callable[[], dict[str, str]], document: dict[str, Any], status: int
) -> None:
    answer = post(secured, document, headers())
    assert answer.status_code == status, answer.text
    if status in (401, 403):
        assert answer.headers["www-authenticate"].startswith("Bearer"), answer.headers


def test_feedback_is_rate_limited_per_caller(secured: ServerProcess) -> None:
    statuses = [
        post(secured, {"request_id": f"probe-{n}", "value": 1}, as_caller("mallory")).status_code
        for n in range(8)
    ]
    assert statuses[:5] == [404] * 5 and set(statuses[5:]) == {429}, statuses
    assert post(secured, {"request_id": "probe", "value": 1}, as_caller("dave")).status_code == 404, (
        "another caller keeps its own allowance"
    )


def test_the_limiter_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = FeedbackLimiter(rate=2, burst=2, clock=lambda: now[0])
    limiter.take("a")
    limiter.take("a")
    with pytest.raises(TooManyFeedbacks):
        limiter.take("a")
    now[0] = 0.5
    limiter.take("a")
    limiter.take("b")


def test_the_store_answers_a_request_once_and_only_to_its_caller() -> None:
    store = ServedRequests(capacity=4)
    store.remember("r1", "m", "2", "alice")
    with pytest.raises(ModelNotFound):
        store.claim("m", "r1", "bob")
    assert store.claim("m", "r1", "alice") == "2"
    with pytest.raises(AlreadyRecorded):
        store.claim("m", "r1", "alice")
