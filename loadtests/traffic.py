"""What the simulated users send, as pure functions: which model, which end user, which headers; how a
result is named in the statistics (model and serving version), and the stickiness check."""

import random
from collections.abc import Mapping

from loadtests.profiles import Traffic

USER_HEADER = "x-user-id"
SEGMENT_HEADER = "x-segment"
VERSION_HEADER = "x-model-version"


def entry_name(model: str, version: str | None) -> str:
    """The statistics entry of a request: `model vN`, or the model alone when no version answered."""
    return model if version is None else f"{model} v{version}"


def parse_entry_name(name: str) -> tuple[str, str | None]:
    """(model, version) back from an entry name."""
    model, sep, version = name.rpartition(" v")
    return (model, version) if sep and model else (name, None)


def end_user_headers(index: int, traffic: Traffic) -> dict[str, str]:
    """Headers of end user `index`: a stable id, and the enterprise segment for the first share of ids."""
    headers = {USER_HEADER: f"user-{index}"}
    if index < traffic.enterprise_share * traffic.user_ids:
        headers[SEGMENT_HEADER] = "enterprise"
    return headers


def pick(traffic: Traffic, rng: random.Random) -> tuple[str, dict[str, str]]:
    """A model by weight and an end user, uniformly from the pool, with their headers (none: no pool)."""
    models = list(traffic.models)
    model = rng.choices(models, weights=[traffic.models[m] for m in models])[0]
    if not traffic.user_ids:
        return model, {}
    return model, end_user_headers(rng.randrange(traffic.user_ids), traffic)


class StickyCheck:
    """Remembers which version served each (model, end user); a change means stickiness broke."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], str] = {}

    def observe(self, model: str, headers: Mapping[str, str], version: str) -> str | None:
        """None if consistent, else a one-line reason for the request's failure."""
        user = headers.get(USER_HEADER)
        if user is None:
            return None
        first = self._seen.setdefault((model, user), version)
        if first != version:
            return f"sticky user {user} of {model} moved from v{first} to v{version}"
        return None
