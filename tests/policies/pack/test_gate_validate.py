"""The pack's validation end to end against a recording OPA: what it sends, and what it reports.

A stand-in OPA on 127.0.0.1 answers the gate's query with set findings and records the input it was
sent, so the test sees both sides of `validate`: the input is the pack's for the project directory
(or the working directory) it was given, and every unwaived finding OPA returns is reported once,
in OPA's order, with its URN. The real rules' findings are tested in tests/policies/pack/test_gate.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from policies.opa import Endpoint
from policies.pack.gate import plan_input, validate
from tests.policies.pack.test_gate import Resource, resources_of

STACK = "uae-prod"
FIXTURE = "uae-prod.infra.preview.json"


def finding(rule: str, urn: str, *, waived: bool = False) -> dict[str, Any]:
    return {
        "id": rule,
        "severity": "high",
        "urn": urn,
        "type": "aws:s3/bucket:Bucket",
        "message": f"{rule} found in {urn}",
        "remediation": f"fix {rule}",
        "waived": waived,
    }


FINDINGS = [
    finding("ENC-001", "urn:a"),
    finding("NET-001", "urn:b", waived=True),
    finding("AUD-001", "urn:c"),
]


class Recorder:
    """The inputs the stand-in OPA was sent, in order."""

    def __init__(self) -> None:
        self.inputs: list[dict[str, Any]] = []


@pytest.fixture
def recording_opa() -> Iterator[tuple[Endpoint, Recorder]]:
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            recorder.inputs.append(json.loads(self.rfile.read(length))["input"])
            body = json.dumps({"result": {"findings": FINDINGS, "summary": {}}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield Endpoint(host="127.0.0.1", port=server.server_address[1]), recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def stack_file(directory: Path, jurisdiction: str) -> Path:
    (directory / f"Pulumi.{STACK}.yaml").write_text(
        f"config:\n  model-serving:jurisdiction: {jurisdiction}\n"
    )
    return directory


def test_validate_reports_each_unwaived_finding_in_order_with_its_urn(
    recording_opa: tuple[Endpoint, Recorder], tmp_path: Path
) -> None:
    endpoint, _ = recording_opa
    reported: list[tuple[str, str | None]] = []
    count = validate(
        resources_of(FIXTURE),
        lambda message, urn: reported.append((message, urn)),
        project_dir=stack_file(tmp_path, "AE"),
        opa_url=endpoint,
    )
    assert (count, reported) == (
        2,
        [
            ("ENC-001 (high): ENC-001 found in urn:a. Fix: fix ENC-001", "urn:a"),
            ("AUD-001 (high): AUD-001 found in urn:c. Fix: fix AUD-001", "urn:c"),
        ],
    ), reported


@pytest.mark.parametrize("jurisdiction", ["AE", "EU"])
def test_validate_sends_the_input_for_the_project_directory_given(
    recording_opa: tuple[Endpoint, Recorder], tmp_path: Path, jurisdiction: str
) -> None:
    endpoint, recorder = recording_opa
    project = stack_file(tmp_path, jurisdiction)
    resources = resources_of(FIXTURE)
    validate(resources, lambda *_: None, project_dir=project, opa_url=endpoint)
    assert recorder.inputs == [plan_input(resources, project)], "the pack's input, sent once"
    assert recorder.inputs[0]["jurisdiction"] == jurisdiction, recorder.inputs[0]["jurisdiction"]


def test_validate_without_a_project_directory_reads_the_working_directory(
    recording_opa: tuple[Endpoint, Recorder], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, recorder = recording_opa
    monkeypatch.chdir(stack_file(tmp_path, "EU"))
    validate(resources_of(FIXTURE), lambda *_: None, opa_url=endpoint)
    assert [i["jurisdiction"] for i in recorder.inputs] == ["EU"], "Pulumi runs the pack in the project"


def test_a_lone_resource_without_provider_or_parent_is_its_own_input(tmp_path: Path) -> None:
    urn = f"urn:pulumi:{STACK}::model-serving::aws:s3/bucket:Bucket::logs"
    lone = Resource("aws:s3/bucket:Bucket", {"bucket": "logs"}, urn, "logs")
    doc = plan_input([lone], stack_file(tmp_path, "AE"))
    assert (doc["stack"], doc["jurisdiction"]) == (STACK, "AE"), "the stack is read from the one URN"
    assert doc["resources"] == [
        {
            "urn": urn,
            "type": "aws:s3/bucket:Bucket",
            "name": "logs",
            "provider": "",
            "parent": "",
            "dependencies": [],
            "properties": {"bucket": "logs"},
        }
    ], doc["resources"]


def test_no_resources_make_no_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^it describes no resources$"):
        plan_input([], stack_file(tmp_path, "AE"))
