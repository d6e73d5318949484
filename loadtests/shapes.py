"""Load shapes as data: a profile's stages, built by pure functions and read by a pure `tick()`.

A stage holds `users` (reached at `spawn_rate` users per second) for `duration_s` seconds; after the last
stage the run stops, so every profile is bounded in time.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from loadtests.config import ConfigError, check_keys, mapping, number


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One step of a load shape."""

    duration_s: float
    """How long the stage lasts, in seconds."""
    users: int
    """Concurrent users during the stage."""
    spawn_rate: float
    """Users started (or stopped) per second to reach `users`."""


def tick(stages: Sequence[Stage], elapsed_s: float) -> tuple[int, float] | None:
    """Users and spawn rate at `elapsed_s` seconds into the run; None once every stage is over."""
    end = 0.0
    for stage in stages:
        end += stage.duration_s
        if elapsed_s < end:
            return stage.users, stage.spawn_rate
    return None


def total_duration(stages: Sequence[Stage]) -> float:
    """Seconds from the first stage's start to the last one's end."""
    return sum(stage.duration_s for stage in stages)


def peak_users(stages: Sequence[Stage]) -> int:
    """The most users any stage asks for."""
    return max((stage.users for stage in stages), default=0)


def constant(*, users: int, duration_s: float, spawn_rate: float | None = None) -> list[Stage]:
    """`users` for `duration_s` (smoke and soak); all started within a second unless `spawn_rate` says."""
    return [Stage(duration_s=duration_s, users=users, spawn_rate=spawn_rate or float(users))]


def step(
    *, start_users: int, step_users: int, steps: int, step_s: float, spawn_rate: float | None = None
) -> list[Stage]:
    """A staircase: `start_users`, then `step_users` more every `step_s`, `steps` stairs in all."""
    return [
        Stage(
            duration_s=step_s,
            users=start_users + i * step_users,
            spawn_rate=spawn_rate or float(max(step_users, start_users)),
        )
        for i in range(steps)
    ]


def ramp(*, users: int, ramp_s: float, hold_s: float) -> list[Stage]:
    """Grow linearly to `users` over `ramp_s`, then hold them for `hold_s`."""
    rate = users / ramp_s if ramp_s > 0 else float(users)
    return [
        Stage(duration_s=ramp_s, users=users, spawn_rate=rate),
        Stage(duration_s=hold_s, users=users, spawn_rate=rate),
    ]


def spike(
    *, base_users: int, peak_users: int, before_s: float, spike_s: float, after_s: float
) -> list[Stage]:
    """A steady base, a sudden peak (every extra user started within a second), and back to the base."""
    jump = float(max(peak_users - base_users, 1))
    return [
        Stage(duration_s=before_s, users=base_users, spawn_rate=float(max(base_users, 1))),
        Stage(duration_s=spike_s, users=peak_users, spawn_rate=jump),
        Stage(duration_s=after_s, users=base_users, spawn_rate=jump),
    ]


_Builder = Callable[..., list[Stage]]
# kind -> (builder, {parameter: whole number?}, optional parameters)
_KINDS: dict[str, tuple[_Builder, dict[str, bool], set[str]]] = {
    "constant": (constant, {"users": True, "duration_s": False, "spawn_rate": False}, {"spawn_rate"}),
    "step": (
        step,
        {"start_users": True, "step_users": True, "steps": True, "step_s": False, "spawn_rate": False},
        {"spawn_rate"},
    ),
    "ramp": (ramp, {"users": True, "ramp_s": False, "hold_s": False}, set()),
    "spike": (
        spike,
        {"base_users": True, "peak_users": True, "before_s": False, "spike_s": False, "after_s": False},
        set(),
    ),
}


def parse_shape(value: object, where: str) -> list[Stage]:
    """Stages from a profile's `shape: {kind: ..., ...}` mapping; bad kinds, keys and values are refused."""
    shape = mapping(value, where)
    kind = shape.get("kind")
    if kind not in _KINDS:
        raise ConfigError(f"{where}.kind: expected one of {', '.join(sorted(_KINDS))}, got {kind!r}")
    builder, params, optional = _KINDS[kind]
    check_keys(shape, {"kind", *params}, where)
    for name in params.keys() - optional - shape.keys():
        raise ConfigError(f"{where}.{name}: missing (required by kind {kind})")
    kwargs: dict[str, Any] = {}
    for name, whole in params.items():
        if name in shape:
            value_ = number(shape[name], f"{where}.{name}", minimum=1 if whole else 0, integer=whole)
            kwargs[name] = int(value_) if whole else value_
    stages = builder(**kwargs)
    if total_duration(stages) <= 0:
        raise ConfigError(f"{where}: the shape lasts 0 s")
    return stages
