"""The wrk report parser, on reports captured from wrk 4.1 (Debian) against the naive server."""

from pathlib import Path

import pytest

from benchmarks.measures import LoadResult
from benchmarks.wrk_runner import WrkError, lua_script, parse_wrk_output, wrk_command

# GET /v2/health/ready at one connection: a p50 in microseconds.
READY_C1 = """\
Running 3s test @ http://127.0.0.1:56375/v2/health/ready
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    83.79ms  199.34ms 850.28ms   87.09%
    Req/Sec     0.90k   579.09     1.90k    75.00%
  Latency Distribution
     50%  728.00us
     75%    4.17ms
     90%  411.63ms
     99%  806.42ms
  2203 requests in 3.12s, 299.16KB read
Requests/sec:    706.47
Transfer/sec:     95.94KB
"""

# Single-row MLP inference at eight connections: every figure in milliseconds.
INFER_C8 = """\
Running 3s test @ http://127.0.0.1:56375/v2/models/mlp/infer
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    16.43ms   17.84ms 122.94ms   89.19%
    Req/Sec   321.07    174.04   841.00     74.58%
  Latency Distribution
     50%   11.65ms
     75%   18.60ms
     90%   36.31ms
     99%   93.88ms
  1946 requests in 3.07s, 796.26KB read
Requests/sec:    634.29
Transfer/sec:    259.54KB
"""

# An unknown model name: every answer is a 404, which wrk counts as non-2xx.
UNKNOWN_MODEL = """\
Running 3s test @ http://127.0.0.1:56375/v2/models/nope/infer
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.87ms    2.97ms  33.20ms   78.75%
    Req/Sec   702.10    179.78     1.13k    73.33%
  Latency Distribution
     50%    5.66ms
     75%    7.01ms
     90%    8.62ms
     99%   17.35ms
  4259 requests in 3.06s, 694.58KB read
  Non-2xx or 3xx responses: 4259
Requests/sec:   1392.55
Transfer/sec:    227.11KB
"""

# A thousand connections with --timeout 3s: latencies in seconds, which wrk pads with a trailing
# space (kept here line by line), and socket timeouts.
OVERLOADED_C1000 = (
    "\n".join(
        (
            "Running 6s test @ http://127.0.0.1:56375/v2/models/mlp/infer",
            "  2 threads and 1000 connections",
            "  Thread Stats   Avg      Stdev     Max   +/- Stdev",
            "    Latency     2.07s   453.43ms   3.00s    58.70%",
            "    Req/Sec   200.34    193.44     0.88k    80.88%",
            "  Latency Distribution",
            "     50%    2.13s ",
            "     75%    2.37s ",
            "     90%    2.66s ",
            "     99%    2.99s ",
            "  1602 requests in 6.10s, 655.51KB read",
            "  Socket errors: connect 0, read 0, write 0, timeout 171",
            "Requests/sec:    262.67",
            "Transfer/sec:    107.48KB",
        )
    )
    + "\n"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (READY_C1, LoadResult(706.47, p50_ms=0.728, p99_ms=806.42, requests=2203, errors=0)),
        (INFER_C8, LoadResult(634.29, p50_ms=11.65, p99_ms=93.88, requests=1946, errors=0)),
        (
            UNKNOWN_MODEL,
            LoadResult(1392.55, p50_ms=5.66, p99_ms=17.35, requests=4259, errors=4259, detail="non-2xx 4259"),
        ),
        (
            OVERLOADED_C1000,
            LoadResult(262.67, p50_ms=2130.0, p99_ms=2990.0, requests=1602, errors=171, detail="timeout 171"),
        ),
    ],
    ids=["microseconds", "milliseconds", "non-2xx", "seconds-and-timeouts"],
)
def test_parse_wrk_output(text: str, expected: LoadResult) -> None:
    result = parse_wrk_output(text)
    assert result.as_dict() == pytest.approx(expected.as_dict()), f"parsed {result}, expected {expected}"


def test_parse_wrk_output_without_latency_distribution_fails() -> None:
    without_latency = "\n".join(line for line in INFER_C8.splitlines() if "%" not in line)
    with pytest.raises(WrkError, match="--latency"):
        parse_wrk_output(without_latency)


def test_lua_script_posts_the_body_as_json() -> None:
    script = lua_script('{"inputs":[{"name":"features","data":[1.5,-2.0]}]}')
    assert 'wrk.method = "POST"' in script, script
    assert 'wrk.body = "{\\"inputs\\":[{\\"name\\":\\"features\\",\\"data\\":[1.5,-2.0]}]}"' in script, script
    assert 'wrk.headers["Content-Type"] = "application/json"' in script, script


def test_lua_script_refuses_non_ascii_bodies() -> None:
    with pytest.raises(ValueError, match="ASCII"):
        lua_script('{"name":"caf\u00e9"}')


@pytest.mark.parametrize(("connections", "threads"), [(1, "-t1"), (8, "-t2"), (64, "-t2")])
def test_wrk_command_uses_one_thread_for_one_connection(connections: int, threads: str) -> None:
    command = wrk_command("http://127.0.0.1:1/infer", Path("post.lua"), connections, 10.0)
    assert threads in command, command
    assert f"-c{connections}" in command, command
    assert "--latency" in command, command
