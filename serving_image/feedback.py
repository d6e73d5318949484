"""Business outcomes for served requests: which version served a request id, and the feedback on it.

Feedback moves an experiment's counters, so it must not be forged or replayed: it names a
request id the server minted and served to the same caller, each such id is counted at most
once, each caller's posts are rate-limited, and with ``auth_mode=jwt`` the caller needs the
model's ``feedback`` scope (and ``admin`` to name a version instead of a request).

The store is bounded (least recently served ids age out first) so memory stays flat under
any load. With several workers each keeps its own, so clients there send the version the
response named rather than the request id.
"""

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from serving_image.auth import Gate, Principal
from serving_image.errors import InvalidInput, ModelNotFound, ServingError

MAX_VALUE = 1e12
# Predicted classes are kept for requests of at most this many rows, so the store stays small; a label
# list may be no longer. A string label may be no longer than MAX_LABEL_CHARS.
MAX_KEPT_ROWS = 64
MAX_LABEL_CHARS = 256

Label = int | str


@dataclass(frozen=True, slots=True)
class Feedback:
    """One outcome: converted or not, a value, or the true class of each row, for a model version."""

    version: str | None
    request_id: str | None
    converted: bool | None
    value: float | None
    # Who sent it (a verified subject, or the trusted proxy's header): it must be who was served.
    caller: str | None = None
    # The ground truth, one class per row of the request (serving_image/quality.py).
    label: tuple[Label, ...] | None = None

    @property
    def kind(self) -> str:
        """What it reports: converted, not_converted or value (the metric label), or label."""
        if self.label is not None:
            return "label"
        if self.value is not None:
            return "value"
        return "converted" if self.converted else "not_converted"


class AlreadyRecorded(ServingError):
    """Feedback on this request was already counted: each served request counts at most once."""

    status = 409
    grpc_code = "ALREADY_EXISTS"
    outcome = "client_error"


class TooManyFeedbacks(ServingError):
    """The caller posts feedback faster than its rate allows."""

    status = 429
    grpc_code = "RESOURCE_EXHAUSTED"
    outcome = "overloaded"


class PredictionNotKept(ServingError):
    """Label feedback on a request whose predictions were not kept (too many rows)."""

    status = 409
    grpc_code = "FAILED_PRECONDITION"
    outcome = "client_error"


@dataclass(slots=True)
class Served:
    """What is kept of a served request; ``predicted`` holds each row's class index, one byte a row."""

    model: str
    version: str
    caller: str | None
    answered: bool = False
    predicted: bytes | None = None
    rows: int = 0


class ServedRequests:
    """request id -> who served it and for whom, for the most recent ``capacity`` served requests."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._served: OrderedDict[str, Served] = OrderedDict()

    def remember(
        self, request_id: str, model: str, version: str, caller: str | None = None,
        predicted: bytes | None = None, rows: int = 0,
    ) -> None:  # fmt: skip
        """Record who served a request, to which caller, and (for a classifier) what it predicted."""
        self._served[request_id] = Served(model, version, caller, predicted=predicted, rows=rows)
        if len(self._served) > self._capacity:
            self._served.popitem(last=False)

    def version_of(self, model: str, request_id: str, caller: str | None = None) -> str:
        """The version that served this caller's request of this model, or 404."""
        return self._entry(model, request_id, caller).version

    def _entry(self, model: str, request_id: str, caller: str | None) -> Served:
        served = self._served.get(request_id)
        # Another caller's request answers exactly as an unknown one: ids are not to be probed.
        if served is None or served.model != model or served.caller != caller:
            raise ModelNotFound(
                f"no request '{request_id}' of model '{model}' is remembered (never served here or aged out)"
            )
        return served

    def unanswered(self, model: str, request_id: str, caller: str | None) -> Served:
        """This caller's served request, still without feedback (404 or 409 otherwise); not yet claimed,
        so feedback that turns out invalid leaves it open. Claim it with :meth:`claim`."""
        served = self._entry(model, request_id, caller)
        if served.answered:
            raise AlreadyRecorded(f"feedback on request '{request_id}' was already recorded")
        return served

    def claim(self, model: str, request_id: str, caller: str | None) -> str:
        """The version that served the request, marking its feedback given: a second claim is 409."""
        served = self.unanswered(model, request_id, caller)
        served.answered = True
        return served.version


class FeedbackLimiter:
    """A token bucket per caller: ``rate`` posts a second, ``burst`` at once; the idlest callers age out."""

    def __init__(
        self, rate: float, burst: int, callers: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._callers = callers
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, caller: str) -> None:
        """Spend one post of ``caller``'s allowance, or raise ``TooManyFeedbacks``."""
        now = self._clock()
        tokens, last = self._buckets.pop(caller, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < 1:
            self._buckets[caller] = (tokens, now)
            raise TooManyFeedbacks(
                f"feedback is limited to {self._rate:g} per second per caller; retry later"
            )
        self._buckets[caller] = (tokens - 1, now)
        if len(self._buckets) > self._callers:
            self._buckets.popitem(last=False)


def parse_feedback(document: dict[str, Any]) -> Feedback:
    """Feedback from its JSON body: a request id or a version, and exactly one outcome."""
    unknown = sorted(set(document) - {"request_id", "version", "converted", "value", "label"})
    if unknown:
        raise InvalidInput(f"unknown feedback field(s) {unknown}")
    request_id, version = document.get("request_id"), document.get("version")
    if (request_id is None) == (version is None):
        raise InvalidInput("feedback needs exactly one of 'request_id' or 'version'")
    for name, given in (("request_id", request_id), ("version", version)):
        if given is not None and (not isinstance(given, str) or not given):
            raise InvalidInput(f"'{name}' must be a non-empty string")
    converted, value, label = document.get("converted"), document.get("value"), document.get("label")
    if sum(given is not None for given in (converted, value, label)) != 1:
        raise InvalidInput(
            "feedback needs exactly one of 'converted' (true/false), 'value' (a number) "
            "or 'label' (the true class, or a list of one per row)"
        )
    if label is not None:
        if request_id is None:
            raise InvalidInput(
                "'label' needs 'request_id': the label is compared with the prediction served for that "
                "request, and a version alone names none"
            )
        return Feedback(None, request_id, None, None, label=parse_label(label))
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


def parse_label(label: object) -> tuple[Label, ...]:
    """One class (an integer, or a string for string-labelled models), or a list of one per row."""
    labels = label if isinstance(label, list) else [label]
    if not labels:
        raise InvalidInput("'label' is an empty list: give one class per row of the request")
    if len(labels) > MAX_KEPT_ROWS:
        raise InvalidInput(
            f"'label' has {len(labels)} entries; at most {MAX_KEPT_ROWS} (predictions are kept only for "
            f"requests of at most {MAX_KEPT_ROWS} rows)"
        )
    for entry in labels:
        if isinstance(entry, bool) or not isinstance(entry, int | str):
            raise InvalidInput(
                f"'label' must be a class (an integer or a string) or a list of them; got {entry!r:.80}"
            )
        if isinstance(entry, str) and not 0 < len(entry) <= MAX_LABEL_CHARS:
            raise InvalidInput(f"a string 'label' must have 1 to {MAX_LABEL_CHARS} characters")
    return tuple(labels)


@dataclass(frozen=True, slots=True)
class Admitted:
    """A feedback post that may go on: its caller, and the principal if a token was checked."""

    caller: str | None
    principal: Principal | None


class FeedbackGuard:
    """Who may post feedback, and how often: authentication, scope and the per-caller rate."""

    def __init__(self, gate: Gate, limiter: FeedbackLimiter) -> None:
        self._gate = gate
        self._limiter = limiter

    async def admit(self, headers: Mapping[str, str], model: str, address: str | None) -> Admitted:
        """Check the caller before the body is read: 401/403 without the scope, 429 over the rate."""
        principal = await self._gate.authorize(headers, model, "feedback") if self._gate.enabled else None
        caller = principal.subject if principal is not None else self._gate.caller(headers)
        # Unattributed posts share a bucket per client address, so one client cannot spend everyone's.
        self._limiter.take(f"caller:{caller}" if caller is not None else f"address:{address}")
        return Admitted(caller, principal)

    def parse(self, admitted: Admitted, model: str, document: dict[str, Any]) -> Feedback:
        """The feedback, attributed; naming a version (no served request to check) needs ``admin``."""
        feedback = replace(parse_feedback(document), caller=admitted.caller)
        if feedback.request_id is None and admitted.principal is not None:
            self._gate.require(admitted.principal, model, "admin")
        return feedback
