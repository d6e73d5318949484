"""The locustfile: V2 users, the profile's shape, and the SLO gate in a `quitting` listener.

Run it through `servectl loadtest` (which checks the files first and writes the report), or directly:
`locust --config loadtests/locust.conf --host http://127.0.0.1:8080 --load-profile smoke`.
"""

import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

import gevent
from locust import LoadTestShape, events
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtests.auth import read_token
from loadtests.config import ConfigError
from loadtests.drift import BUNDLED_REPOSITORY
from loadtests.measure import Entry, Sample, measure, window
from loadtests.profiles import BUNDLED_PROFILES, Profile, load_profile, loaded_models, parse_models, restrict
from loadtests.shapes import tick
from loadtests.slo import (
    BUNDLED_SLO,
    Threshold,
    evaluate,
    exit_code,
    load_slo,
    render,
    require_loaded,
    rows,
    scope_label,
)
from loadtests.users import Catalog, GrpcUser, RestUser

__all__ = ["GrpcUser", "ProfileShape", "RestUser"]

GATES_FILE = "gates.json"
_COLUMNS = ("gate", "measured", "threshold", "result")
TIMELINE_FILE = "timeline.csv"
TIMELINE_COLUMNS = tuple(Sample.__dataclass_fields__)
SAMPLE_INTERVAL_S = {"local": 2.0, "distributed": 4.0}
"""Seconds per timeline window; workers report every 3 s, so distributed windows are longer."""


def _options(parser: LocustArgumentParser) -> None:
    group = parser.add_argument_group("model-serving load tests")
    group.add_argument("--load-profile", default="smoke", help="profile name in --load-profiles")
    group.add_argument("--load-profiles", default=str(BUNDLED_PROFILES), help="profiles YAML")
    group.add_argument("--slo-file", default=str(BUNDLED_SLO), help="SLO gates YAML")
    group.add_argument("--grpc-target", default="", help="host:port of the V2 gRPC endpoint")
    group.add_argument("--report-dir", default="", help="where the gate writes gates.json")
    group.add_argument("--load-models", default="", help="comma-separated models to load (default: all)")
    group.add_argument("--bearer-token-env", default="", help="environment variable holding a bearer token")
    group.add_argument("--model-repository", default=str(BUNDLED_REPOSITORY),
                       help="model repository whose profile.json the drift profile samples")  # fmt: skip


class _Run:
    """What the `init` listener read, for the shape and the gate."""

    profile: Profile | None = None
    thresholds: list[Threshold] = []
    started = time.monotonic()
    timeline: "Timeline | None" = None


def _init(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:  # used as a library; the caller configures Catalog itself
        return
    models = parse_models(options.load_models) if options.load_models else ()
    try:
        _Run.profile = restrict(load_profile(options.load_profile, Path(options.load_profiles)), models)
        _Run.thresholds = load_slo(Path(options.slo_file))
        require_loaded(_Run.thresholds, loaded_models(_Run.profile), options.slo_file)
        # Read here, in every process: workers inherit the variable, so the token never travels in argv.
        token = read_token(options.bearer_token_env, os.environ) if options.bearer_token_env else None
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    Catalog.configure(_Run.profile, options.grpc_target or None, token, Path(options.model_repository))
    # locust weights are whole numbers; scaled so that fractional weights keep their ratio. A protocol
    # without weight is left out by the user classes named on the command line (see loadtests.run).
    weights = _Run.profile.traffic.protocols
    RestUser.weight = max(1, round(100 * weights.get("rest", 0)))
    GrpcUser.weight = max(1, round(100 * weights.get("grpc", 0)))


def _test_start(environment: Environment, **_: Any) -> None:
    _Run.started = Catalog.started = time.monotonic()
    options = environment.parsed_options
    if not isinstance(environment.runner, WorkerRunner) and options is not None and options.report_dir:
        _Run.timeline = Timeline(Path(options.report_dir) / TIMELINE_FILE)
        gevent.spawn(_sample_forever, environment)


def _sample_forever(environment: Environment) -> None:
    interval = SAMPLE_INTERVAL_S["distributed" if isinstance(environment.runner, MasterRunner) else "local"]
    while _Run.timeline is not None:
        gevent.sleep(interval)
        _sample(environment)


def _sample(environment: Environment) -> None:
    if _Run.timeline is not None:
        users = environment.runner.user_count if environment.runner is not None else 0
        _Run.timeline.add(_entries(environment), time.monotonic() - _Run.started, users)


class ProfileShape(LoadTestShape):
    """The profile's stages; the run stops when they end."""

    def tick(self) -> tuple[int, float] | None:
        """Users and spawn rate now, from the pure `loadtests.shapes.tick`."""
        assert _Run.profile is not None, "the init listener reads the profile"
        elapsed: float = self.get_run_time()  # type: ignore[no-untyped-call]
        return tick(_Run.profile.stages, elapsed)


class Timeline:
    """`timeline.csv`: each window's figures overall and per variant, for the report's charts."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.previous, self.t_s = path, dict[str, Entry](), 0.0
        with path.open("w", newline="", encoding="utf-8") as out:
            csv.writer(out).writerow(TIMELINE_COLUMNS)

    def add(self, entries: dict[str, Entry], t_s: float, users: int) -> None:
        """Append the window since the last call; a last sliver under a second is left out (too noisy)."""
        if t_s - self.t_s < 1.0:
            return
        samples = window(self.previous, entries, t_s, t_s - self.t_s, users)
        self.previous, self.t_s = entries, t_s
        with self.path.open("a", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            for s in samples:
                writer.writerow([_csv_value(getattr(s, column)) for column in TIMELINE_COLUMNS])


def _csv_value(value: object) -> object:
    return "" if isinstance(value, float) and math.isnan(value) else value


def _entries(environment: Environment) -> dict[str, Entry]:
    return {
        f"{entry.method} {entry.name}": Entry(
            name=entry.name,
            requests=entry.num_requests,
            failures=entry.num_failures,
            response_times=dict(entry.response_times),
        )
        for entry in environment.stats.entries.values()
    }


def _gate(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or not _Run.thresholds:
        return
    _sample(environment)
    _Run.timeline = None
    total = environment.stats.total
    span = (total.last_request_timestamp or 0) - total.start_time
    duration = span if span > 0 else time.monotonic() - _Run.started
    measured = measure(_entries(environment).values(), duration)
    results = evaluate(_Run.thresholds, measured)
    print(render(results), file=sys.stderr)
    environment.process_exit_code = exit_code(results)
    options = environment.parsed_options
    if options is not None and options.report_dir:
        document = {
            "exit_code": environment.process_exit_code,
            "duration_s": duration,
            "gates": [dict(zip(_COLUMNS, row, strict=True)) for row in rows(results)],
            "measured": {scope_label(s): _plain(vars(m)) for s, m in sorted(measured.items(), key=_order)},
        }
        path = Path(options.report_dir) / GATES_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def _order(item: tuple[tuple[str | None, str | None], object]) -> tuple[str, str]:
    model, version = item[0]
    return (model or "", version or "")


def _plain(value: object) -> object:
    """JSON-safe: mappings as dicts, NaN (no data) as null."""
    if isinstance(value, dict | MappingProxyType):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


events.init_command_line_parser.add_listener(_options)  # type: ignore[no-untyped-call]
events.init.add_listener(_init)  # type: ignore[no-untyped-call]
events.test_start.add_listener(_test_start)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_gate)  # type: ignore[no-untyped-call]
