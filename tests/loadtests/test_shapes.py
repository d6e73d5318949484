"""Load shapes: the pure `tick()` and the builders behind the profile kinds."""

import pytest

from loadtests.config import ConfigError
from loadtests.shapes import Stage, constant, parse_shape, peak_users, ramp, spike, step, tick, total_duration

STAGES = [
    Stage(duration_s=10, users=5, spawn_rate=5),
    Stage(duration_s=10, users=20, spawn_rate=10),
    Stage(duration_s=5, users=5, spawn_rate=15),
]


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        (0.0, (5, 5.0)),
        (9.99, (5, 5.0)),
        (10.0, (20, 10.0)),
        (19.5, (20, 10.0)),
        (24.9, (5, 15.0)),
        (25.0, None),
        (1e6, None),
    ],
)
def test_tick_follows_the_stages_and_ends(elapsed: float, expected: tuple[int, float] | None) -> None:
    assert tick(STAGES, elapsed) == expected, f"at {elapsed} s"


def test_tick_of_no_stages_stops_at_once() -> None:
    assert tick([], 0.0) is None, "an empty shape must stop the run"


def test_step_climbs_by_step_users() -> None:
    stages = step(start_users=5, step_users=5, steps=4, step_s=20)
    assert [s.users for s in stages] == [5, 10, 15, 20], stages
    assert total_duration(stages) == 80 and peak_users(stages) == 20, stages


def test_ramp_spawns_linearly_then_holds() -> None:
    stages = ramp(users=30, ramp_s=60, hold_s=30)
    assert stages[0].spawn_rate == pytest.approx(0.5), "30 users over 60 s is 0.5 users/s"
    assert tick(stages, 70) == (30, 0.5), "holding"
    assert tick(stages, 90) is None, "ramp plus hold is 90 s"


def test_spike_jumps_and_returns_to_base() -> None:
    stages = spike(base_users=5, peak_users=50, before_s=10, spike_s=5, after_s=10)
    assert [tick(stages, t) for t in (5, 12, 20)] == [(5, 5.0), (50, 45.0), (5, 45.0)], stages


def test_constant_starts_all_users_within_a_second() -> None:
    assert constant(users=8, duration_s=10) == [Stage(duration_s=10, users=8, spawn_rate=8.0)]


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ({"kind": "wave"}, "x.kind: expected one of constant, ramp, spike, step"),
        ({"kind": "constant", "users": 4}, "x.duration_s: missing"),
        ({"kind": "constant", "users": 4, "duration_s": 10, "user": 3}, "x.user: unknown key"),
        ({"kind": "constant", "users": 2.5, "duration_s": 10}, "x.users: expected a whole number"),
        ({"kind": "constant", "users": 0, "duration_s": 10}, "x.users: must be at least 1"),
        ({"kind": "constant", "users": 4, "duration_s": "10s"}, "x.duration_s: expected a number"),
        ({"kind": "constant", "users": 4, "duration_s": 0}, "x: the shape lasts 0 s"),
    ],
)
def test_bad_shapes_name_the_key(shape: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_shape(shape, "x")
