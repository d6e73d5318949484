"""The async jobs benchmark: figures from job records, its open-loop client, and one tiny run end to end."""

import json
import os
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from benchmarks.async_jobs import main, submit_script
from benchmarks.async_report import ModelFigures, PathFigures, format_paths, latency_figures
from benchmarks.job_records import JobRecord, clear_records, latency, read_records, throughput, wait_drained
from benchmarks.open_loop import OpenLoopResult, Sent, post_request, submit_open_loop
from benchmarks.redis_server import running_redis
from benchmarks.workload import BenchModel

SLOW_ANSWER_S = 0.05


def record(job_id: str, created: float, started: float | None = None, finished: float | None = None,
           state: str = "done") -> JobRecord:  # fmt: skip
    return JobRecord(job_id, state, created, started, finished)


def test_throughput_spans_the_first_start_to_the_last_finish_and_counts_unfinished_jobs() -> None:
    records = [
        record("a", 10.0, 10.1, 10.5),
        record("b", 10.2, 10.6, 11.0),
        record("c", 10.3, state="pending"),
    ]
    created = throughput(records, "created")
    assert (created.done, created.not_done) == (2, 1), created
    assert created.span_s == pytest.approx(1.0) and created.rows_per_s == pytest.approx(2.0), created
    assert throughput(records, "started").span_s == pytest.approx(0.9), "from the first started time"
    assert throughput([], "created").rows_per_s == 0.0, "no jobs, no rate (and no division by zero)"


def test_latency_is_finished_minus_created_over_the_done_jobs_only() -> None:
    records = [record(str(n), 5.0, 5.0, 5.0 + (n + 1) / 1000) for n in range(100)]
    records.append(record("failed", 0.0, 0.0, 9.0, state="failed"))
    measured = latency(records)
    assert measured.jobs == 100, measured
    assert (measured.p50_ms, measured.p90_ms, measured.p99_ms, measured.max_ms) == pytest.approx(
        (50.0, 90.0, 99.0, 100.0)
    ), measured


def test_latency_figures_take_the_intake_lag_from_due_times_and_count_every_failure() -> None:
    records = [record("a", 100.010, 100.02, 100.03), record("b", 100.025, state="pending")]
    sent = OpenLoopResult(
        [Sent(100.000, 202, "a"), Sent(100.005, 202, "b"), Sent(100.010, 429, None)], 1, 0.1
    )
    figures = latency_figures(0.5, 100.0, sent, records, 150.0)
    assert figures.sent == 3 and figures.late == 1, figures
    assert figures.errors == 2, "one submit refused and one job never done"
    assert figures.intake_lag_p99_ms == pytest.approx(20.0), "b was due at .005 and taken in at .025"
    assert figures.latency.jobs == 1 and figures.latency.p50_ms == pytest.approx(20.0), figures.latency


@pytest.mark.parametrize(("connections", "per_thread"), [(16, 501), (1, 1001)])
def test_the_submit_script_asks_for_jobs_and_stops_each_wrk_thread_at_its_share(
    tmp_path: Path, connections: int, per_thread: int
) -> None:
    text = submit_script(tmp_path, "jobs", '{"inputs":[]}', 1001, connections).read_text(encoding="utf-8")
    assert 'wrk.headers["Prefer"] = "respond-async"' in text, text
    assert f"local answers, limit = 0, {per_thread}\n" in text, text
    assert "if answers >= limit then wrk.thread:stop() end" in text, text


def _paths(*rows: tuple[str, float, float]) -> ModelFigures:
    model = BenchModel("tabular", "d", Path("."), "features", 30)
    return ModelFigures(model, [PathFigures(name, rate, 100, us, 1.0, 0, "") for name, rate, us in rows], [])


def test_each_async_path_is_compared_with_the_best_sync_run() -> None:
    table = format_paths(_paths(
        ("sync c=8", 8000, 125), ("sync c=64", 6000, 150), ("async submit+run", 2000, 375),
    ))  # fmt: skip
    assert "async submit+run / sync c=8: rate 0.25x, server CPU per row 3.00x" in table, table
    assert "/ sync c=64" not in table, table
    assert " / " not in format_paths(_paths(("async worker only", 7000, 130))), "no sync run, no ratio"


def test_the_cpu_busy_column_is_rate_times_cpu_per_row() -> None:
    table = format_paths(_paths(("sync c=8", 8000, 125), ("async worker only", 4000, 150)))
    assert " 100% " in table and " 60% " in table, table


class _SlowAccepting(BaseHTTPRequestHandler):
    """Answers every POST with 202 and a job id, after a delay."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        threading.Event().wait(SLOW_ANSWER_S)  # a slow server, not a synchronisation
        body = json.dumps({"id": uuid.uuid4().hex, "status": "pending"}).encode()
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def slow_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowAccepting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _payload(port: int) -> bytes:
    return post_request(port, "/v2/models/m/infer", b"{}", {"Prefer": "respond-async"})


def test_the_open_loop_keeps_its_schedule_when_the_answers_are_slow(slow_port: int) -> None:
    result = submit_open_loop(
        slow_port, _payload(slow_port), rate=200, count=20, time_limit_s=10, connections=32
    )
    assert [s.status for s in result.sent] == [202] * 20, result.sent
    assert len({s.job_id for s in result.sent}) == 20, "each answer's job id is kept"
    assert result.sent[-1].due - result.sent[0].due == pytest.approx(19 / 200, abs=1e-6), "due 5 ms apart"
    # How late each send leaves depends on this machine's load; whether it had to wait does not.
    assert result.no_free_connection == 0, f"{result.no_free_connection} of 20 found no free connection"
    assert result.elapsed_s < 20 * SLOW_ANSWER_S / 2, (
        f"{result.elapsed_s:.2f} s: the sends waited for answers"
    )


def test_a_request_with_no_free_connection_at_its_time_counts_as_late(slow_port: int) -> None:
    result = submit_open_loop(
        slow_port, _payload(slow_port), rate=200, count=10, time_limit_s=10, connections=1
    )
    assert [s.status for s in result.sent] == [202] * 10, result.sent
    assert result.no_free_connection >= 8, f"{result.no_free_connection} of 10 waited for the one connection"
    assert result.late >= result.no_free_connection - 1, "a send that waited 50 ms left late"


def test_the_job_records_are_read_and_cleared_and_a_stream_drains(tmp_path: Path) -> None:
    with running_redis(tmp_path / "redis") as redis:
        client = redis.client
        client.hset("job:a", mapping={"state": "done", "created": "1.5", "started": "1.6", "finished": "1.7"})
        client.hset("job:b", mapping={"state": "pending", "created": "2.0"})
        client.set("other", "x")
        records = sorted(read_records(client, limit=100), key=lambda r: r.job_id)
        assert records == [record("a", 1.5, 1.6, 1.7), record("b", 2.0, state="pending")], records
        client.xadd("jobs", {"id": "a"})
        assert not wait_drained(client, "jobs", timeout_s=0.1), "a stream with an entry has not drained"
        client.xtrim("jobs", maxlen=0)
        assert wait_drained(client, "jobs", timeout_s=0.1), "an empty stream has drained"
        assert clear_records(client, limit=100) == 2 and client.exists("other"), "only the job hashes go"
        assert read_records(client, limit=100) == []


def _row(table: str, path: str) -> list[str]:
    """The figures after ``path`` on its row of the table."""
    name = path.split()
    for line in table.splitlines():
        words = line.split()
        if words[: len(name)] == name and "/" not in line:
            return words[len(name) :]
    raise AssertionError(f"no row for {path}:\n{table}")


def test_a_tiny_run_measures_every_path_and_load(capsys: pytest.CaptureFixture[str]) -> None:
    affinity = os.sched_getaffinity(0)
    code = main([
        "--models", "tabular", "--duration", "1", "--warmup", "0.5", "--concurrency", "4",
        "--min-jobs", "100", "--max-jobs", "200", "--loads", "0.5", "--latency-duration", "0.5",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert os.sched_getaffinity(0) == affinity, "the run gives this process its CPUs back"
    for path in ("sync c=4", "async submit+run", "async submit only", "async worker only"):
        rate, rows, server_us, busy, _, errors = _row(out, path)[:6]
        assert float(rate) > 0 and int(rows) > 0 and float(server_us) > 0, f"{path}: {out}"
        assert busy.endswith("%") and int(busy[:-1]) > 0, f"{path}: {out}"
        assert errors == "0", f"{path} saw errors:\n{out}"
    for path in ("async submit+run", "async submit only", "async worker only"):
        assert int(_row(out, path)[1]) >= 200, f"{path} ran fewer jobs than asked:\n{out}"
    load = _row(out, "50%")
    assert int(load[1]) > 0 and load[9] == "0", f"the open-loop run sent jobs, all done:\n{out}"
    assert "async submit+run / sync c=4: rate" in out and "machine: " in out and "redis-server 7" in out, out
