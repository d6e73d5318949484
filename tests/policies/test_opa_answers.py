"""The gate client against every kind of answer an OPA server can give: only the gate's findings pass.

A stand-in server on 127.0.0.1 answers the gate's query with a set answer, in this process, so that
each answer a real OPA could give (a rule left undefined because the policies are not loaded, a
result without findings, an HTTP error with OPA's error document) is checked through the real
HTTP client. That the real OPA gives these answers is what tests/policies/test_opa.py proves.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from policies.opa import OUTPUT_LIMIT, Endpoint, Gate, OpaError, free_port, one_line

PLAN = {"stack": "uae-prod", "resources": [{"urn": "urn:pulumi:uae-prod::p::t::n"}]}
HOST = "127.0.0.2"
NOT_LOADED = "OPA returned no gate.report.result: is this server loaded with policies/?"


@dataclass
class Answer:
    """What the stand-in answers next, and what it was asked."""

    status: int = 200
    body: str = "{}"
    delay: float = 0.0
    asked: list[tuple[str, Any]] = field(default_factory=list)


@pytest.fixture
def stand_in() -> Iterator[tuple[Endpoint, Answer]]:
    """A server that answers every POST with the set answer and records the path and JSON body."""
    answer = Answer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            answer.asked.append((self.path, json.loads(self.rfile.read(length))))
            body = answer.body.encode()
            time.sleep(answer.delay)  # an OPA slow to evaluate a large plan
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    # Not 127.0.0.1 (nor localhost): the client must go to the host it is given.
    server = ThreadingHTTPServer((HOST, 0), Handler)
    # A short poll so that shutting the stand-in down after each test takes no noticeable time.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield Endpoint(host=HOST, port=server.server_address[1]), answer
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def evaluate(endpoint: Endpoint) -> dict[str, Any]:
    with Gate(endpoint) as gate:
        return gate.evaluate(PLAN)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("{}", id="rule undefined: policies not loaded"),
        pytest.param('{"result": {"summary": {"allow": true, "denied": 0}}}', id="result without findings"),
        pytest.param('{"result": {"allow": true}}', id="another rule's shape"),
        pytest.param('{"result": null}', id="null result"),
        pytest.param('{"result": [{"findings": []}]}', id="findings in a list"),
        pytest.param('{"result": "findings"}', id="a string naming findings"),
        pytest.param("[]", id="not an object"),
        pytest.param('{"decision_id": "x", "findings": []}', id="findings beside the result"),
    ],
)
def test_an_answer_without_the_gates_findings_is_an_error_never_a_pass(
    stand_in: tuple[Endpoint, Answer], body: str
) -> None:
    endpoint, answer = stand_in
    answer.body = body
    with pytest.raises(OpaError) as caught:
        evaluate(endpoint)
    assert str(caught.value) == NOT_LOADED, str(caught.value)
    assert caught.value.output == "", "no local OPA output to show"


def test_the_gates_result_is_returned_as_opa_gave_it(stand_in: tuple[Endpoint, Answer]) -> None:
    endpoint, answer = stand_in
    result = {"findings": [{"id": "RES-001", "urn": "u"}], "summary": {"allow": False, "denied": 1}}
    answer.body = json.dumps({"decision_id": "d-1", "result": result})
    assert evaluate(endpoint) == result
    assert answer.asked == [("/v1/data/gate/report/result", {"input": PLAN})], (
        "the gate asks for gate.report.result with the plan as input"
    )


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        pytest.param(
            '{\n  "code": "invalid_parameter",\n  "message": "bad input"\n}',
            '{"code": "invalid_parameter", "message": "bad input"}',
            id="OPA's pretty error document made compact",
        ),
        pytest.param("bad\n   request \n^\n", "bad | request", id="text on one line"),
        pytest.param(
            json.dumps({"message": "x" * OUTPUT_LIMIT}),
            json.dumps({"message": "x" * OUTPUT_LIMIT})[:OUTPUT_LIMIT] + "...",
            id="a long answer cut at the limit",
        ),
        pytest.param(
            json.dumps({"message": "x" * (OUTPUT_LIMIT - 15)}),
            json.dumps({"message": "x" * (OUTPUT_LIMIT - 15)}),
            id="an answer of exactly the limit kept whole",
        ),
    ],
)
def test_an_http_error_carries_opas_answer(stand_in: tuple[Endpoint, Answer], body: str, shown: str) -> None:
    endpoint, answer = stand_in
    # 400: the client retries 500s; a bad request is answered at once.
    answer.status, answer.body = 400, body
    with pytest.raises(OpaError) as caught:
        evaluate(endpoint)
    url = f"http://{HOST}:{endpoint.port}/v1/data/gate/report/result"
    assert str(caught.value) == (
        f"OPA could not evaluate gate.report.result: 400 Client Error: Bad Request for url: {url}; "
        f"OPA answered: {shown}"
    ), str(caught.value)


def test_an_http_error_without_a_body_is_the_error_alone(stand_in: tuple[Endpoint, Answer]) -> None:
    endpoint, answer = stand_in
    answer.status, answer.body = 403, ""
    with pytest.raises(OpaError) as caught:
        evaluate(endpoint)
    url = f"http://{HOST}:{endpoint.port}/v1/data/gate/report/result"
    assert str(caught.value) == (
        f"OPA could not evaluate gate.report.result: 403 Client Error: Forbidden for url: {url}"
    ), str(caught.value)


def test_no_server_is_an_error_naming_the_rule() -> None:
    with pytest.raises(OpaError) as caught:
        evaluate(Endpoint(host="127.0.0.1", port=free_port()))
    message = str(caught.value)
    assert message.startswith("OPA could not evaluate gate.report.result: "), message
    assert "Connection refused" in message, f"the transport's own error is shown: {message}"
    assert "OPA answered" not in message, "no answer is made up when nothing answered"


def test_an_answer_that_is_not_json_is_an_error(stand_in: tuple[Endpoint, Answer]) -> None:
    endpoint, answer = stand_in
    answer.body = "<html>proxy error</html>"
    with pytest.raises(OpaError) as caught:
        evaluate(endpoint)
    assert str(caught.value) == (
        "OPA could not evaluate gate.report.result: Expecting value: line 1 column 1 (char 0)"
    ), str(caught.value)


def test_a_plan_that_is_not_json_is_an_error(stand_in: tuple[Endpoint, Answer]) -> None:
    endpoint, _ = stand_in
    with pytest.raises(OpaError) as caught, Gate(endpoint) as gate:
        gate.evaluate({"stack": "uae-prod", "resources": {"not", "a", "list"}})
    assert str(caught.value) == (
        "OPA could not evaluate gate.report.result: Object of type set is not JSON serializable"
    ), str(caught.value)


def test_a_slow_answer_is_awaited(stand_in: tuple[Endpoint, Answer]) -> None:
    endpoint, answer = stand_in
    # Longer than the client library's own 1.5 s default: the gate waits for large plans.
    answer.body, answer.delay = '{"result": {"findings": [], "summary": {}}}', 2.0
    assert evaluate(endpoint) == {"findings": [], "summary": {}}


def test_an_https_endpoint_is_never_spoken_to_in_plain_http(stand_in: tuple[Endpoint, Answer]) -> None:
    endpoint, answer = stand_in
    answer.body = '{"result": {"findings": [], "summary": {}}}'
    with pytest.raises(OpaError, match="SSL"):
        evaluate(Endpoint(host=endpoint.host, port=endpoint.port, ssl=True))
    assert answer.asked == [], "the plan never went out unencrypted"


def test_a_line_of_other_characters_than_carets_is_kept() -> None:
    assert one_line("XX\n ^^\nX^\n") == "XX | X^"
