"""The transport benchmark's pure parts: pinning and the table's ratios."""

import os

from benchmarks.measures import LoadResult, pinned
from benchmarks.processes import tree_cpu_seconds
from benchmarks.transport import Measured, format_rows


def measured(setup: str, protocol: str, conc: int, rps: float, us: float) -> Measured:
    return Measured(setup, protocol, conc, LoadResult(rps, 1.0, 2.0, int(rps * 8)), us)


def test_pinned_prefixes_taskset_only_when_asked() -> None:
    assert pinned(["wrk", "-c8"], None) == ["wrk", "-c8"]
    assert pinned(["wrk", "-c8"], "0") == ["taskset", "--cpu-list", "0", "wrk", "-c8"]


def test_ratios_compare_grpc_with_rest_in_the_same_setup_and_concurrency() -> None:
    rows = [
        measured("pinned", "rest", 8, 5000, 200),
        measured("pinned", "grpc", 8, 6000, 160),
        measured("shared", "rest", 8, 9000, 210),
        measured("shared", "grpc", 8, 4500, 300),
    ]
    table = format_rows("tabular", rows)
    assert "pinned c=8: gRPC/REST rate 1.20x, server CPU per request 0.80x" in table, table
    assert "shared c=8: gRPC/REST rate 0.50x, server CPU per request 1.43x" in table, table


def test_a_setup_missing_one_protocol_has_no_ratio() -> None:
    table = format_rows("mlp", [measured("pinned", "rest", 64, 5000, 200)])
    assert "gRPC/REST" not in table, table


def test_tree_cpu_seconds_counts_this_process() -> None:
    before = tree_cpu_seconds(os.getpid())
    total = sum(i * i for i in range(2_000_000))  # burn some CPU
    assert total > 0
    assert tree_cpu_seconds(os.getpid()) > before, "CPU time did not grow while this process computed"
