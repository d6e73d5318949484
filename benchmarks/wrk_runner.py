"""Drive ``wrk`` against one URL and read its ``--latency`` report."""

import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

from benchmarks.measures import LoadResult, pinned

WRK = "/usr/bin/wrk"

# wrk prints durations with a unit suffix chosen per value (see its units.c).
_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_COUNT = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


class WrkError(Exception):
    """wrk failed or printed a report this parser does not understand."""


def parse_wrk_output(text: str) -> LoadResult:
    """The throughput, p50/p99 and error count in the text ``wrk --latency`` printed."""
    percentiles = {
        match[1]: float(match[2]) * _TIME_UNITS_MS[match[3]] for match in _PERCENTILE.finditer(text)
    }
    rate = _RATE.search(text)
    count = _COUNT.search(text)
    if rate is None or count is None or set(percentiles) != {"50", "99"}:
        raise WrkError(f"unrecognised wrk output (was --latency given?):\n{text}")
    counts = _error_counts(text)
    return LoadResult(
        requests_per_s=float(rate[1]),
        p50_ms=percentiles["50"],
        p99_ms=percentiles["99"],
        requests=int(count[1]),
        errors=sum(counts.values()),
        detail=", ".join(f"{kind} {number}" for kind, number in counts.items() if number),
    )


def _error_counts(text: str) -> dict[str, int]:
    counts = {"non-2xx": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0}
    if non_2xx := _NON_2XX.search(text):
        counts["non-2xx"] = int(non_2xx[1])
    if socket := _SOCKET.search(text):
        counts.update(zip(("connect", "read", "write", "timeout"), map(int, socket.groups()), strict=True))
    return counts


def lua_script(body: str, headers: Mapping[str, str] | None = None, tokens_file: Path | None = None) -> str:
    """A wrk script that POSTs ``body`` as JSON on every request, with ``headers``.

    With ``tokens_file`` (one bearer token a line), each request carries the next token: wrk's
    first thread takes the even lines and its second the odd ones, so none is sent twice in a row.
    """
    # For an ASCII body, json.dumps yields a double-quoted string whose escapes Lua reads the same way.
    if not body.isascii():
        raise ValueError("the request body must be ASCII to embed it in a Lua string")
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = {json.dumps(body)}",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    for name, value in (headers or {}).items():
        if not (name + value).isascii():
            raise ValueError("headers must be ASCII to embed them in a Lua string")
        lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    if tokens_file is not None:
        lines += [
            "local threads = 0",
            'function setup(thread) thread:set("first", threads); threads = threads + 1 end',
            "local tokens, index = {}, 0",
            f"function init(args) for line in io.lines({json.dumps(str(tokens_file))}) do"
            " tokens[#tokens + 1] = line end; index = first or 0 end",
            "function request()",
            '  wrk.headers["Authorization"] = "Bearer " .. tokens[index % #tokens + 1]',
            "  index = index + 2",
            "  return wrk.format()",
            "end",
        ]
    return "\n".join(lines) + "\n"


def write_lua_script(
    directory: Path,
    name: str,
    body: str,
    headers: Mapping[str, str] | None = None,
    tokens_file: Path | None = None,
) -> Path:
    """Write the POST script for one model into ``directory`` and return its path."""
    path = directory / f"{name}.lua"
    path.write_text(lua_script(body, headers, tokens_file), encoding="utf-8")
    return path


def wrk_command(url: str, script: Path, connections: int, duration_s: float) -> list[str]:
    """The wrk command line: one thread for a single connection, two otherwise (the machine has two cores)."""
    threads = 1 if connections == 1 else 2
    return [
        WRK,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]


def run_wrk(
    url: str, script: Path, connections: int, duration_s: float, cpus: str | None = None
) -> LoadResult:
    """Run wrk for ``duration_s`` seconds and parse its report; the process is killed if it overruns.
    With ``cpus`` (a ``taskset`` list) wrk runs only on those CPUs."""
    command = pinned(wrk_command(url, script, connections, duration_s), cpus)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 30, check=False)
    except subprocess.TimeoutExpired as error:
        raise WrkError(f"wrk did not finish within {duration_s + 30:.0f} s") from error
    if done.returncode != 0:
        raise WrkError(f"wrk exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk_output(done.stdout)
