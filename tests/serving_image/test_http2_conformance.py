"""h2spec, the HTTP/2 conformance suite, against a real server's gRPC port: in clear text and over TLS.

What this proves that the gRPC tests cannot: gRPC clients only send well-formed frames, so they never
exercise how the server's HTTP/2 layer answers malformed, out-of-order or hostile framing and HPACK
(RFC 9113, RFC 7541). h2spec does, one case at a time.

Many cases send ``GET /`` or ``POST /`` without gRPC's headers and wait for a complete answer, some
for at least one byte of body (h2spec otherwise fails or skips them). A gRPC server can give one:
gRPC's HTTP/2 protocol asks for HTTP 415 when the content-type is not ``application/grpc``, and that
answer can carry a short text body. One case also needs SETTINGS_MAX_CONCURRENT_STREAMS advertised.
A skipped case counts as not passed here.
"""

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from xml.etree import ElementTree

import pytest

from tests.serving_image.conftest import REPO_ROOT, start_server
from tests.serving_image.test_tls import https_probe, make_pki, tls_flags

H2SPEC = REPO_ROOT / ".tools" / "bin" / "h2spec"
# How long h2spec waits for each expected frame. A conforming server answers within milliseconds and
# the whole suite runs in seconds; each case the server gets wrong costs a wait of this.
CASE_TIMEOUT_SECONDS = 2
# The bound on one run, under pytest's 300 s per test with room to start the server. A server that
# fails half the cases by staying silent still fits (grpc core: 87 of them, about 190 s).
RUN_TIMEOUT_SECONDS = 240
# h2spec 2.2.1 runs 145 cases by default; far fewer means the harness, not the server, is broken.
MIN_CASES = 100
# Case ids are h2spec's own selectors, so one case can be watched frame by frame.
RERUN_HINT = "to watch one: .tools/bin/h2spec -p GRPC_PORT -v CASE_ID, against a running server"

# h2spec case id ("http2/6.9.1/1", as h2spec numbers and selects it) -> why it cannot apply to a
# server that speaks only gRPC. Empty on purpose: every default case tests the framing layer, and
# the HTTP answers some cases need (see the module docstring) are ones a gRPC server can give.
EXCLUDED: dict[str, str] = {}

Outcome = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One h2spec case as its JUnit report gives it."""

    case_id: str
    title: str
    outcome: Outcome
    expected: tuple[str, ...] = ()
    actual: str = ""

    def describe(self) -> str:
        """One line: the id, the title and, unless it passed, what h2spec wanted and what it got."""
        line = f"{self.case_id} {self.title}"
        if self.outcome == "skipped":
            return f"{line}: skipped (a precondition h2spec needs is missing)"
        if self.outcome == "failed":
            wanted = f"expected {' or '.join(self.expected)}; " if self.expected else ""
            return f"{line}: {wanted}got {self.actual}"
        return line


def _failure_text(case: ElementTree.Element) -> tuple[tuple[str, ...], str] | None:
    """(expected, actual) of a failed case, or None if it did not fail.

    h2spec writes ``<failure>`` as "Expect:\\n...\\nActual:\\n..." but, in practice, ``<error>`` with
    the expected alternatives one per line and the actual frame last; errors of its own are one line.
    """
    failure, error = case.find("failure"), case.find("error")
    if failure is not None:
        head, _, actual = (failure.text or "").strip().partition("\nActual:\n")
        return tuple(head.removeprefix("Expect:\n").splitlines()), actual.strip()
    if error is not None:
        *expected, actual = (error.text or "").strip().splitlines() or [""]
        return tuple(expected), actual
    return None


def parse_junit(text: str) -> list[CaseResult]:
    """Every case of an h2spec JUnit report, in order, with ids h2spec accepts as case selectors.

    The report names cases only by title; h2spec numbers them from 1 within their group.
    """
    results = []
    for suite in ElementTree.fromstring(text).iter("testsuite"):
        for sequence, case in enumerate(suite.findall("testcase"), start=1):
            case_id = f"{case.get('package') or suite.get('package')}/{sequence}"
            title = case.get("classname", "")
            failed = _failure_text(case)
            if failed is not None:
                results.append(CaseResult(case_id, title, "failed", *failed))
            else:
                outcome: Outcome = "skipped" if case.find("skipped") is not None else "passed"
                results.append(CaseResult(case_id, title, outcome))
    return results


def conformance_problems(results: list[CaseResult], excluded: dict[str, str]) -> list[str]:
    """What is wrong with a run: cases that did not pass and are not excluded, and stale exclusions."""
    problems = [r.describe() for r in results if r.outcome != "passed" and r.case_id not in excluded]
    outcomes = {r.case_id: r.outcome for r in results}
    for case_id, reason in excluded.items():
        if case_id not in outcomes:
            problems.append(f"{case_id} is excluded ({reason}) but h2spec ran no such case")
        elif outcomes[case_id] == "passed":
            problems.append(f"{case_id} is excluded ({reason}) but passes: take it off EXCLUDED")
    return problems


def _tail(output: str | bytes | None) -> str:
    """The end of h2spec's output, where it says why it stopped."""
    text = output.decode(errors="replace") if isinstance(output, bytes) else output or ""
    return text[-3000:]


def run_h2spec(port: int, report: Path, *, tls: bool) -> list[CaseResult]:
    """Run the whole default suite against 127.0.0.1:``port``; its parsed report."""
    if not H2SPEC.is_file():
        pytest.fail(f"h2spec is missing at {H2SPEC}: run `make setup` (make test does)")
    command = [
        str(H2SPEC), "--host", "127.0.0.1", "--port", str(port),
        "--timeout", str(CASE_TIMEOUT_SECONDS), "--junit-report", str(report),
    ]  # fmt: skip
    if tls:
        # h2spec cannot be given a CA bundle; the handshake and the h2 ALPN choice are still checked.
        command += ["--tls", "--insecure"]
    try:
        run = subprocess.run(
            command, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(
            f"h2spec did not finish in {RUN_TIMEOUT_SECONDS} s: {' '.join(command)}\n{_tail(expired.stdout)}"
        )
    if not report.is_file():
        pytest.fail(
            f"h2spec wrote no report (exit {run.returncode}): {' '.join(command)}\n{_tail(run.stdout)}"
        )
    return parse_junit(report.read_text(encoding="utf-8"))


@pytest.fixture(scope="module", params=["h2c", "tls"])
def conformance(
    request: pytest.FixtureRequest, bundled_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[CaseResult]]:
    """h2spec's results against a fresh server's gRPC port, which must then still drain and exit 0."""
    tls = request.param == "tls"
    logs = tmp_path_factory.mktemp(f"h2spec-{request.param}")
    if tls:
        pki = make_pki(logs / "pki")
        server = start_server(bundled_models, logs, *tls_flags(pki, False), probe=https_probe(pki, False))
    else:
        server = start_server(bundled_models, logs)
    try:
        yield run_h2spec(server.grpc_port, logs / "report.xml", tls=tls)
    finally:
        code = server.stop()
    assert code == 0, f"server did not exit cleanly after h2spec: {server.stderr()}"


@pytest.mark.slow
def test_h2spec_runs_the_whole_suite(conformance: list[CaseResult]) -> None:
    assert len(conformance) >= MIN_CASES, (
        f"h2spec ran {len(conformance)} cases, expected at least {MIN_CASES}"
    )


@pytest.mark.slow
def test_every_h2spec_case_passes_on_the_grpc_port(conformance: list[CaseResult]) -> None:
    problems = conformance_problems(conformance, EXCLUDED)
    listing = "\n".join(problems)
    assert not problems, f"{len(problems)} of {len(conformance)} h2spec cases ({RERUN_HINT}):\n{listing}"


SAMPLE_REPORT = """<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
  <testsuite name="2. Streams and Multiplexing" package="generic/2" id="2" tests="2" errors="1">
    <testcase package="generic/2" classname="Sends a PRIORITY frame on idle stream" time="0.0004"></testcase>
    <testcase package="generic/2" classname="Sends a WINDOW_UPDATE frame on half-closed (remote) stream">
      <error>DATA frame
RST_STREAM Frame (length:4, flags:0x00, stream_id:1)</error>
    </testcase>
  </testsuite>
  <testsuite name="6.9.1. The Flow-Control Window" package="http2/6.9.1" id="6.9.1" tests="3">
    <testcase package="http2/6.9.1" classname="Sends SETTINGS frame to set the initial window size to 1">
      <skipped></skipped>
    </testcase>
    <testcase package="http2/6.9.1" classname="Sends multiple WINDOW_UPDATE frames">
      <failure>Expect:
GOAWAY Frame (Error Code: FLOW_CONTROL_ERROR)
Connection closed
Actual:
Timeout</failure>
    </testcase>
    <testcase package="http2/6.9.1" classname="Sends multiple WINDOW_UPDATE frames on a stream">
      <error>Unable to get server data length</error>
    </testcase>
  </testsuite>
</testsuites>
"""


def test_parse_junit_reads_ids_outcomes_and_h2spec_texts() -> None:
    assert parse_junit(SAMPLE_REPORT) == [
        CaseResult("generic/2/1", "Sends a PRIORITY frame on idle stream", "passed"),
        CaseResult(
            "generic/2/2",
            "Sends a WINDOW_UPDATE frame on half-closed (remote) stream",
            "failed",
            ("DATA frame",),
            "RST_STREAM Frame (length:4, flags:0x00, stream_id:1)",
        ),
        CaseResult("http2/6.9.1/1", "Sends SETTINGS frame to set the initial window size to 1", "skipped"),
        CaseResult(
            "http2/6.9.1/2",
            "Sends multiple WINDOW_UPDATE frames",
            "failed",
            ("GOAWAY Frame (Error Code: FLOW_CONTROL_ERROR)", "Connection closed"),
            "Timeout",
        ),
        CaseResult(
            "http2/6.9.1/3",
            "Sends multiple WINDOW_UPDATE frames on a stream",
            "failed",
            (),
            "Unable to get server data length",
        ),
    ]


def test_problems_name_each_case_h2spec_text_and_stale_exclusions() -> None:
    results = parse_junit(SAMPLE_REPORT)
    excluded = {"http2/6.9.1/3": "cannot apply", "generic/2/1": "thought not to apply", "http2/9.9/1": "gone"}
    assert conformance_problems(results, excluded) == [
        "generic/2/2 Sends a WINDOW_UPDATE frame on half-closed (remote) stream: "
        "expected DATA frame; got RST_STREAM Frame (length:4, flags:0x00, stream_id:1)",
        "http2/6.9.1/1 Sends SETTINGS frame to set the initial window size to 1: "
        "skipped (a precondition h2spec needs is missing)",
        "http2/6.9.1/2 Sends multiple WINDOW_UPDATE frames: "
        "expected GOAWAY Frame (Error Code: FLOW_CONTROL_ERROR) or Connection closed; got Timeout",
        "generic/2/1 is excluded (thought not to apply) but passes: take it off EXCLUDED",
        "http2/9.9/1 is excluded (gone) but h2spec ran no such case",
    ]
    assert conformance_problems(results[:1], {}) == [], "a run where every case passed has no problems"
