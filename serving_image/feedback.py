"""Business outcomes for served requests: which version served a request id, and the feedback on it.

The store is bounded (least recently served ids age out first) so memory stays flat under
any load. With several workers each keeps its own, so clients there send the version the
response named rather than the request id.
"""

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from serving_image.errors import InvalidInput, ModelNotFound

MAX_VALUE = 1e12


@dataclass(frozen=True, slots=True)
class Feedback:
    """One outcome: converted or not, or a value, for a model version."""

    version: str | None
    request_id: str | None
    converted: bool | None
    value: float | None

    @property
    def kind(self) -> str:
        """The metric label: converted, not_converted or value."""
        if self.value is not None:
            return "value"
        return "converted" if self.converted else "not_converted"


class ServedRequests:
    """request id -> (model, version), for the most recent ``capacity`` served requests."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._served: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def remember(self, request_id: str, model: str, version: str) -> None:
        """Record who served a request."""
        self._served[request_id] = (model, version)
        if len(self._served) > self._capacity:
            self._served.popitem(last=False)

    def version_of(self, model: str, request_id: str) -> str:
        """The version that served a request of this model, or 404."""
        served = self._served.get(request_id)
        if served is None or served[0] != model:
            raise ModelNotFound(
                f"no request '{request_id}' of model '{model}' is remembered (never served here or aged out)"
            )
        return served[1]


def parse_feedback(document: dict[str, Any]) -> Feedback:
    """Feedback from its JSON body: a request id or a version, and exactly one outcome."""
    unknown = sorted(set(document) - {"request_id", "version", "converted", "value"})
    if unknown:
        raise InvalidInput(f"unknown feedback field(s) {unknown}")
    request_id, version = document.get("request_id"), document.get("version")
    if (request_id is None) == (version is None):
        raise InvalidInput("feedback needs exactly one of 'request_id' or 'version'")
    for name, given in (("request_id", request_id), ("version", version)):
        if given is not None and (not isinstance(given, str) or not given):
            raise InvalidInput(f"'{name}' must be a non-empty string")
    converted, value = document.get("converted"), document.get("value")
    if (converted is None) == (value is None):
        raise InvalidInput("feedback needs exactly one of 'converted' (true/false) or 'value' (a number)")
    if converted is not None and not isinstance(converted, bool):
        raise InvalidInput("'converted' must be true or false")
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
    ):
        raise InvalidInput("'value' must be a finite number")
    if value is not None and value < 0:
        # Values are summed in Prometheus counters, which never go down.
        raise InvalidInput("'value' must not be negative (report refunds as their own outcome)")
    if value is not None and value > MAX_VALUE:
        raise InvalidInput(f"'value' must be at most {MAX_VALUE:g}, so its square stays finite")
    return Feedback(version, request_id, converted, None if value is None else float(value))
